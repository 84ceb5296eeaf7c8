"""security.firewall: a packet filter active with a default-deny input policy; unexpected public listeners.

Looks at nftables (``nft -j list ruleset``), iptables (``iptables -S INPUT``) and ufw
(``ufw status verbose``), whichever exist.  Listening sockets come from psutil; a listener
on a non-loopback address whose port is not in ``allowed_ports`` is a finding.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from upkeeper import lazy
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError
from upkeeper.tasks.security._common import CheckOutput, is_loopback

if TYPE_CHECKING:
    import psutil
else:  # the run's, not the CLI's that validates the job (~10 ms): the worker loads it before the run
    psutil = lazy.module("psutil")

NFT_ARGV = ("nft", "-j", "list", "ruleset")
IPTABLES_ARGV = ("iptables", "-S", "INPUT")
UFW_ARGV = ("ufw", "status", "verbose")


@dataclass
class FirewallState:
    tool: str
    active: bool
    input_policy: str | None  # accept | drop | reject | deny
    detail: str = ""
    readable: bool = True  # False: the tool failed (not root, no CAP_NET_ADMIN, a timeout): its state is unknown


def parse_nft_json(text: str) -> FirewallState:
    """``nft -j list ruleset``; raises ValueError when it is not that (not JSON, or not a ruleset's shape)."""
    data = json.loads(text or "{}")
    items = data.get("nftables", []) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("nft -j printed JSON that is not a ruleset (no 'nftables' list)")
    policies = []
    rules = 0
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"nft -j printed a ruleset entry that is not an object: {str(item)[:60]!r}")
        chain = item.get("chain")
        if isinstance(chain, dict) and chain.get("hook") == "input" and chain.get("type") == "filter":
            policies.append(str(chain.get("policy", "accept")))
        if "rule" in item:
            rules += 1
    if not policies:
        return FirewallState("nftables", False, None, "no input filter chain")
    policy = "drop" if all(p in ("drop", "reject") for p in policies) else "accept"
    return FirewallState("nftables", True, policy, f"{len(policies)} input chain(s), {rules} rule(s)")


def parse_iptables_s(text: str) -> FirewallState:
    policy = None
    rules = 0
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["-P", "INPUT"] and len(parts) >= 3:
            policy = parts[2].lower()
        elif parts[:2] == ["-A", "INPUT"]:
            rules += 1
    active = policy not in (None, "accept") or rules > 0
    return FirewallState("iptables", active, policy, f"{rules} INPUT rule(s)")


def parse_ufw_status(text: str) -> FirewallState:
    active = "status: active" in text.lower()
    policy = None
    for line in text.splitlines():
        if line.lower().startswith("default:"):
            for part in line.split(":", 1)[1].split(","):
                if "(incoming)" in part:
                    policy = part.split("(")[0].strip().lower()
    return FirewallState("ufw", active, policy, text.splitlines()[0] if text else "")


def detect() -> list[FirewallState]:
    states: list[FirewallState] = []
    for tool, argv, parser in (("ufw", UFW_ARGV, parse_ufw_status), ("nft", NFT_ARGV, parse_nft_json),
                               ("iptables", IPTABLES_ARGV, parse_iptables_s)):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            continue
        exe = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin") or tool
        try:
            res = proc.run([exe, *argv[1:]], timeout=20)
            states.append(parser(res.text))
        except (ProcessError, ValueError) as exc:
            states.append(FirewallState(tool, False, None, f"could not read: {exc}", readable=False))
    return states


@dataclass
class Listener:
    address: str
    port: int
    process: str
    pid: int | None


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def listeners() -> list[Listener]:
    out: dict[tuple[str, int], Listener] = {}
    for c in psutil.net_connections(kind="inet"):
        if c.status != psutil.CONN_LISTEN and not (c.type == 2 and c.laddr):  # TCP LISTEN, or bound UDP
            continue
        if not c.laddr:
            continue
        name = ""
        if c.pid:
            try:
                name = psutil.Process(c.pid).name()
            except (psutil.Error, OSError):
                name = ""
        key = (c.laddr.ip, c.laddr.port)
        out.setdefault(key, Listener(c.laddr.ip, c.laddr.port, name, c.pid))
    return sorted(out.values(), key=lambda x: (x.port, x.address))


class FirewallOptions(TaskOptions):
    allowed_ports: list[int] = Field(
        [22, 80, 443], description="ports that may listen on public addresses. Source: a web server's usual set"
    )
    allowed_processes: list[str] = Field(
        default_factory=list, description="process names allowed to listen publicly on any port. "
                "Source: upkeeper (not set by default)"
    )
    require_firewall: bool = Field(True, description="report a host without an active firewall. "
            "Source: upkeeper default")


def check_firewall(options: FirewallOptions) -> CheckOutput:
    out = CheckOutput()
    states = detect()
    active = [s for s in states if s.active]
    if not states:
        if options.require_firewall:
            out.findings.append(Finding(
                "security.firewall.missing", Severity.CRITICAL, "host",
                "no firewall tool found (nft, iptables, ufw): nothing filters inbound traffic on this host "
                "(unless a provider firewall does)", "install and enable ufw or nftables with a default-deny "
                "input policy (ufw default deny incoming; ufw allow 22,80,443/tcp; ufw enable)"))
    elif not active and any(not s.readable for s in states):
        # a tool that could not be read may well be filtering: not "inactive", but not a pass either
        if options.require_firewall:
            out.findings.append(Finding(
                "security.firewall.unreadable", Severity.WARNING, "host",
                "the firewall's state is unknown: " + "; ".join(f"{s.tool}: {s.detail}" for s in states),
                "run this check as root: nft and iptables need CAP_NET_ADMIN to list the rules, ufw needs root "
                "(or set require_firewall: false where a provider's firewall filters)",
                data={"tools": [s.__dict__ for s in states]}))
    elif not active:
        if options.require_firewall:
            out.findings.append(Finding(
                "security.firewall.inactive", Severity.CRITICAL, "host",
                "firewall present but inactive: " + "; ".join(f"{s.tool}: {s.detail}" for s in states),
                "enable it with a default-deny input policy", data={"tools": [s.__dict__ for s in states]}))
    else:
        for s in active:
            if s.input_policy in (None, "accept", "allow"):
                out.findings.append(Finding(
                    "security.firewall.default_accept", Severity.WARNING, s.tool,
                    f"{s.tool} is active but the default input policy is {s.input_policy or 'accept'}",
                    "set the default input policy to drop/deny and allow only the ports you serve",
                    value=s.input_policy, threshold="drop"))
    public = [ln for ln in listeners() if not is_loopback(ln.address)]
    allowed = set(options.allowed_ports)
    for ln in public:
        if ln.port in allowed or (ln.process and ln.process in options.allowed_processes):
            continue
        fix = "bind it to 127.0.0.1, block the port in the firewall, or add it to allowed_ports"
        if not ln.process and os.geteuid() != 0:  # another user's socket: its process is not this user's to see
            who = _user()
            message = (f"a process {who} cannot see (another user's: only root may name it) listens on public "
                       f"address {ln.address}:{ln.port}, which is not an allowed port")
            fix += (f"; if it is one of allowed_processes, run this check as root ({who} cannot tell which process "
                    "it is)")
        else:
            message = (f"{ln.process or 'a process'} (pid {ln.pid or '?'}) listens on public address "
                       f"{ln.address}:{ln.port}, which is not an allowed port")
        out.findings.append(Finding(
            "security.firewall.unexpected_listener", Severity.WARNING, f"{ln.address}:{ln.port}", message, fix,
            value=ln.port, data={"process": ln.process, "pid": ln.pid}))
    out.metrics.update({"public_listeners": float(len(public)), "firewalls_active": float(len(active))})
    none = "unknown (could not be read)" if any(not s.readable for s in states) else "none active"
    out.summary = (f"firewall: {', '.join(f'{s.tool} ({s.input_policy})' for s in active) or none}; "
                   f"{len(public)} public listener(s)")
    return out


@task
class SecurityFirewall(Task[FirewallOptions]):
    """Check that nftables, iptables or ufw is active with a default input policy that is not accept, and
    compare listening sockets with the allowed ports: an unexpected public listener is a finding."""

    name = "security.firewall"
    summary = "firewall active with default deny; unexpected public listeners"
    target_kinds = ("host",)
    Options = FirewallOptions
    category = "security"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: FirewallOptions) -> Result:
        out = check_firewall(options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
