"""security.ssh: the effective sshd configuration against Lynis SSH-7408, plus an algorithm probe.

The configuration is what ``sshd -T`` prints (OpenSSH's own evaluation, including
Include files and defaults); when that is unavailable the config file and its Includes
are read, first value wins, with OpenSSH's defaults for what is unset.

Thresholds: Lynis ``include/tests_ssh`` test SSH-7408 (option: expected, medium, weak).
Upkeeper adds PasswordAuthentication and PermitEmptyPasswords (CIS Benchmark 5.2),
and treats ``ClientAliveInterval 0`` (no idle timeout) as weak where Lynis lets it pass.
Algorithm verdicts follow ssh-audit's database (``ssh2_kexdb.py``): what ssh-audit fails
is a warning here, what it warns about is info.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError, TaskError
from upkeeper.tasks.security._common import CheckOutput
from upkeeper.tasks.security._sshproto import ProbeError, probe


@dataclass(frozen=True)
class SshRule:
    option: str
    good: str          # regex (full match, upper-case) or number
    medium: str
    weak: str
    kind: str          # '=' equal is better, '<' lower is better, '!' not equal is better
    remediation: str
    critical_if_weak: bool = False


#: Source: Lynis include/tests_ssh, SSH-7408 (SSHOPS), in its own notation; + CIS additions (last three)
LYNIS_SSH_7408: tuple[SshRule, ...] = (
    SshRule("AllowTcpForwarding", "NO", "LOCAL", "YES", "=", "AllowTcpForwarding no"),
    SshRule("ClientAliveCountMax", "2", "4", "16", "<", "ClientAliveCountMax 2"),
    SshRule("ClientAliveInterval", "300", "600", "900", "<", "ClientAliveInterval 300"),
    SshRule("Compression", "NO", "", "YES", "=", "Compression no"),
    SshRule("FingerprintHash", "SHA256", "MD5", "", "=", "FingerprintHash sha256"),
    SshRule("GatewayPorts", "NO", "", "YES", "=", "GatewayPorts no"),
    SshRule("IgnoreRhosts", "YES", "", "NO", "=", "IgnoreRhosts yes"),
    SshRule("LoginGraceTime", "120", "240", "480", "<", "LoginGraceTime 120"),
    SshRule("LogLevel", "VERBOSE", "INFO", "", "=", "LogLevel VERBOSE (logs key fingerprints of logins)"),
    SshRule("MaxAuthTries", "3", "6", "999", "<", "MaxAuthTries 3"),
    SshRule("MaxSessions", "2", "4", "8", "<", "MaxSessions 2"),
    SshRule("PermitRootLogin", "(FORCED-COMMANDS-ONLY|NO|PROHIBIT-PASSWORD|WITHOUT-PASSWORD)", "", "YES", "=",
            "PermitRootLogin no (log in as a user, then sudo)", critical_if_weak=True),
    SshRule("PermitUserEnvironment", "NO", "", "YES", "=", "PermitUserEnvironment no"),
    SshRule("PermitTunnel", "NO", "", "YES", "=", "PermitTunnel no"),
    SshRule("Port", "", "", "22", "!", "a port other than 22 cuts log noise from scanners"),
    SshRule("PrintLastLog", "YES", "", "NO", "=", "PrintLastLog yes"),
    SshRule("StrictModes", "YES", "", "NO", "=", "StrictModes yes"),
    SshRule("TCPKeepAlive", "NO", "", "YES", "=", "TCPKeepAlive no (use ClientAlive* instead)"),
    SshRule("UseDNS", "NO", "", "YES", "=", "UseDNS no"),
    SshRule("X11Forwarding", "NO", "", "YES", "=", "X11Forwarding no"),
    SshRule("AllowAgentForwarding", "NO", "", "YES", "=", "AllowAgentForwarding no"),
    SshRule("PasswordAuthentication", "NO", "", "YES", "=",
            "PasswordAuthentication no (keys only; brute force cannot guess a key)"),
    SshRule("PermitEmptyPasswords", "NO", "", "YES", "=", "PermitEmptyPasswords no", critical_if_weak=True),
    SshRule("KbdInteractiveAuthentication", "NO", "", "YES", "=",
            "KbdInteractiveAuthentication no (unless you use 2FA via PAM)"),
)

#: the options the maintenance procedures ask about (the default selection)
DEFAULT_OPTIONS = ("PermitRootLogin", "PasswordAuthentication", "PermitEmptyPasswords", "MaxAuthTries",
                   "X11Forwarding", "AllowAgentForwarding", "AllowTcpForwarding", "LogLevel", "ClientAliveInterval")

#: OpenSSH defaults (sshd_config(5)) for the fallback file reader
OPENSSH_DEFAULTS = {
    "permitrootlogin": "prohibit-password", "passwordauthentication": "yes", "permitemptypasswords": "no",
    "maxauthtries": "6", "x11forwarding": "no", "allowagentforwarding": "yes", "allowtcpforwarding": "yes",
    "loglevel": "INFO", "clientaliveinterval": "0", "clientalivecountmax": "3", "compression": "yes",
    "fingerprinthash": "SHA256", "gatewayports": "no", "ignorerhosts": "yes", "logingracetime": "120",
    "maxsessions": "10", "permituserenvironment": "no", "permittunnel": "no", "port": "22", "printlastlog": "yes",
    "strictmodes": "yes", "tcpkeepalive": "yes", "usedns": "no", "kbdinteractiveauthentication": "yes",
}

#: Source: ssh-audit ssh2_kexdb.py — algorithms it fails (→ warning) and warns about (→ info)
WEAK_ALGORITHMS: dict[str, dict[str, tuple[Severity, str]]] = {
    "kex": {
        "diffie-hellman-group1-sha1": (Severity.WARNING, "1024-bit modulus, Logjam, SHA-1"),
        "diffie-hellman-group14-sha1": (Severity.WARNING, "SHA-1"),
        "diffie-hellman-group-exchange-sha1": (Severity.WARNING, "SHA-1"),
        "rsa1024-sha1": (Severity.WARNING, "1024-bit modulus, SHA-1"),
        "ecdh-sha2-nistp256": (Severity.INFO, "NIST curve (ssh-audit: suspected backdoored)"),
        "ecdh-sha2-nistp384": (Severity.INFO, "NIST curve (ssh-audit: suspected backdoored)"),
        "ecdh-sha2-nistp521": (Severity.INFO, "NIST curve (ssh-audit: suspected backdoored)"),
        "diffie-hellman-group14-sha256": (Severity.INFO, "2048-bit modulus (112-bit strength)"),
    },
    "hostkey": {
        "ssh-dss": (Severity.WARNING, "1024-bit DSA"),
        "ssh-rsa": (Severity.WARNING, "SHA-1 signatures"),
        "ecdsa-sha2-nistp256": (Severity.INFO, "NIST curve, weak RNG could reveal the key"),
    },
    "enc": {
        "3des-cbc": (Severity.WARNING, "broken 3DES"), "des-cbc": (Severity.WARNING, "broken DES"),
        "blowfish-cbc": (Severity.WARNING, "Blowfish"), "cast128-cbc": (Severity.WARNING, "CAST"),
        "arcfour": (Severity.WARNING, "RC4"), "arcfour128": (Severity.WARNING, "RC4"),
        "arcfour256": (Severity.WARNING, "RC4"), "rijndael-cbc@lysator.liu.se": (Severity.WARNING, "Rijndael"),
        "none": (Severity.WARNING, "no encryption"),
        "aes128-cbc": (Severity.INFO, "CBC mode"), "aes192-cbc": (Severity.INFO, "CBC mode"),
        "aes256-cbc": (Severity.INFO, "CBC mode"),
    },
    "mac": {
        "hmac-md5": (Severity.WARNING, "MD5"), "hmac-md5-96": (Severity.WARNING, "MD5"),
        "hmac-md5-etm@openssh.com": (Severity.WARNING, "MD5"), "hmac-md5-96-etm@openssh.com": (Severity.WARNING, "MD5"),
        "hmac-sha1": (Severity.WARNING, "SHA-1"), "hmac-sha1-96": (Severity.WARNING, "SHA-1"),
        "hmac-sha1-etm@openssh.com": (Severity.WARNING, "SHA-1"),
        "hmac-sha1-96-etm@openssh.com": (Severity.WARNING, "SHA-1"),
        "hmac-ripemd160": (Severity.WARNING, "RIPEMD"), "none": (Severity.WARNING, "no integrity"),
        "umac-64@openssh.com": (Severity.INFO, "64-bit tag, encrypt-and-MAC"),
        "umac-64-etm@openssh.com": (Severity.INFO, "64-bit tag"),
        "hmac-sha2-256": (Severity.INFO, "encrypt-and-MAC"), "hmac-sha2-512": (Severity.INFO, "encrypt-and-MAC"),
        "umac-128@openssh.com": (Severity.INFO, "encrypt-and-MAC"),
    },
}


class SshOptions(TaskOptions):
    config: str = Field("/etc/ssh/sshd_config", description="sshd configuration file. "
            "Source: OpenSSH's Debian package")
    sshd: str = Field("/usr/sbin/sshd", description="sshd binary used for 'sshd -T'. "
            "Source: OpenSSH's Debian package")
    connection: str | None = Field(
        None, description="'sshd -T -C' connection spec to evaluate Match blocks, e.g. 'user=deploy,addr=203.0.113.9'. "
                "Source: upkeeper (not set by default)"
    )
    options: list[str] = Field(
        list(DEFAULT_OPTIONS), description="sshd options to check (any from Lynis SSH-7408; ['all'] for the full "
        "Lynis table). Source: the maintenance procedures' SSH review",
    )
    probe: list[str] = Field(
        default_factory=list, description="host:port endpoints whose banner and offered algorithms to check "
        "(like ssh-audit). Source: upkeeper (not set by default)"
    )
    timeout: float = Field(10, gt=0, description="seconds for sshd -T and each probe. "
            "Source: upkeeper default")


def evaluate_value(rule: SshRule, value: str) -> str:
    """GOOD, MIDSCORED, WEAK or UNKNOWN — Lynis' comparison for one option."""
    v = value.strip().upper()
    if rule.kind == "=":
        if rule.good and re.fullmatch(rule.good, v):
            return "GOOD"
        if rule.medium and re.fullmatch(rule.medium, v):
            return "MIDSCORED"
        return "WEAK"
    if rule.kind == "<":
        try:
            n = int(v.split()[0])
        except (ValueError, IndexError):
            return "UNKNOWN"
        if rule.option == "ClientAliveInterval" and n == 0:
            return "WEAK"  # upkeeper: 0 disables the idle timeout
        if n >= int(rule.weak) or n > int(rule.medium):
            return "WEAK"
        if n > int(rule.good):
            return "MIDSCORED"
        return "GOOD"
    if rule.kind == "!":
        return "WEAK" if v == rule.weak else "GOOD"
    return "UNKNOWN"


def parse_sshd_t(text: str) -> dict[str, str]:
    """``sshd -T`` output → lower-case option → value (first occurrence; multi-value options joined)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key.lower() not in out:
            out[key.lower()] = value.strip()
    return out


def read_config_file(path: str, depth: int = 0, included_at: str | None = None,
                     done: set[str] | None = None) -> dict[str, str]:
    """sshd_config and its Includes, first value wins, Match blocks skipped (sshd_config(5)).  A file that
    cannot be read -- the config itself, or one an Include names (a directory matched by its glob, a file sshd's
    user may read but upkeeper's may not) -- raises TaskError naming it and the Include line.  A file included
    again (a glob that matches the file itself, two Includes of one file) is read once: first value wins, so a
    second reading adds nothing, and a file including itself twice made 2**8 readings (8 levels deep)."""
    done = set() if done is None else done
    done.add(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        where = f" (included at {included_at})" if included_at else ""
        raise TaskError(f"cannot read the sshd config {path}{where}: {exc.strerror or exc}",
                        "Try: set 'config' to the sshd_config sshd reads, let the user upkeeper runs as read it "
                        "and what it includes, or make 'sshd -T' work (the sshd option)") from None
    out: dict[str, str] = {}
    in_match = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
        k = parts[0].lower()
        v = parts[1].strip() if len(parts) > 1 else ""
        if k == "match":  # 'Match all' ends a Match block: what follows is global again (sshd_config(5))
            in_match = v.strip().lower() != "all"
            continue
        if in_match:
            continue
        if k == "include" and depth < 8:
            for pattern in v.split():
                p = pattern if pattern.startswith("/") else str(Path("/etc/ssh") / pattern)
                for f in sorted(glob.glob(p)):
                    if f in done:
                        continue
                    for ik, iv in read_config_file(f, depth + 1, f"{path}:{lineno}", done).items():
                        out.setdefault(ik, iv)
            continue
        out.setdefault(k, v)
    return out


def effective_config(options: SshOptions) -> tuple[dict[str, str], str]:
    """(option → value, source description)."""
    argv = [options.sshd, "-T", "-f", options.config]
    if options.connection:
        argv += ["-C", options.connection]
    try:
        res = proc.run(argv, timeout=options.timeout)
        return parse_sshd_t(res.text), "sshd -T"
    except ProcessError as exc:
        reason = exc.message
    values = {**OPENSSH_DEFAULTS, **read_config_file(options.config)}
    return values, f"{options.config} (sshd -T unavailable: {reason.splitlines()[0][:200]})"


def _remediation(rule: SshRule, config: str) -> str:
    setting, _, why = rule.remediation.partition(" (")
    if rule.kind == "!":
        return f"{setting[:1].upper()}{setting[1:]} in {config}" + (f" ({why}" if why else "")
    return f"set '{setting}' in {config} and reload sshd" + (f" ({why}" if why else "")


def check_config(options: SshOptions) -> CheckOutput:
    values, source = effective_config(options)
    wanted = {o.lower() for o in options.options}
    rules = [r for r in LYNIS_SSH_7408 if "all" in wanted or r.option.lower() in wanted]
    out = CheckOutput()
    good = 0
    for rule in rules:
        value = values.get(rule.option.lower())
        if value is None:
            continue
        verdict = evaluate_value(rule, value)
        if verdict == "GOOD":
            good += 1
            continue
        if verdict == "UNKNOWN":
            continue
        sev = Severity.INFO if verdict == "MIDSCORED" else (
            Severity.CRITICAL if rule.critical_if_weak else Severity.WARNING)
        if rule.option == "PasswordAuthentication" and values.get("permitrootlogin", "").lower() == "yes":
            sev = Severity.CRITICAL
        out.findings.append(Finding(
            f"security.ssh.{rule.option.lower()}", sev, options.config,
            f"{rule.option} is {value} ({'reasonable' if verdict == 'MIDSCORED' else 'weak'}; Lynis SSH-7408 "
            f"prefers {rule.good.strip('()').replace('|', ' or ') or 'another value'})",
            _remediation(rule, options.config), value=value,
            threshold=rule.good or f"not {rule.weak}", data={"source": source, "lynis": verdict},
        ))
    if not source.startswith("sshd -T"):
        out.findings.append(Finding("security.ssh.source", Severity.INFO, options.config,
                                    f"evaluated the file, not sshd's own view: {source}",
                                    "run upkeeper where 'sshd -T' works (root, /run/sshd present)"))
    out.metrics.update({"options_checked": float(len(rules)), "options_good": float(good)})
    out.summary = f"sshd: {good}/{len(rules)} options as Lynis SSH-7408 prefers ({source.split(' (')[0]})"
    return out


def check_probe(endpoint: str, timeout: float) -> CheckOutput:
    host, _, port_s = endpoint.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    out = CheckOutput()
    try:
        kex = probe(host, int(port_s or 22), timeout)
    except (OSError, ProbeError, ValueError) as exc:
        out.findings.append(Finding("security.ssh.probe_failed", Severity.WARNING, endpoint,
                                    f"SSH probe failed: {exc}", "check the endpoint (host:port)"))
        return out
    lists = {"kex": kex.lists.get("kex", []), "hostkey": kex.lists.get("hostkey", []),
             "enc": sorted(set(kex.lists.get("enc_c2s", [])) | set(kex.lists.get("enc_s2c", []))),
             "mac": sorted(set(kex.lists.get("mac_c2s", [])) | set(kex.lists.get("mac_s2c", [])))}
    for kind, algos in lists.items():
        weak = [(a, *WEAK_ALGORITHMS[kind][a]) for a in algos if a in WEAK_ALGORITHMS[kind]]
        for sev in (Severity.WARNING, Severity.INFO):
            names = [f"{a} ({why})" for a, s, why in weak if s is sev]
            if names:
                directive = {"kex": "KexAlgorithms", "hostkey": "HostKeyAlgorithms", "enc": "Ciphers",
                             "mac": "MACs"}[kind]
                out.findings.append(Finding(
                    f"security.ssh.weak_{kind}", sev, endpoint, f"offers weak {kind} algorithms: {', '.join(names)}",
                    f"remove them with '{directive} -{','.join(a for a, s, _ in weak if s is sev)}' in sshd_config "
                    "(ssh-audit's policy)", value=len(names), data={"offered": algos}))
    m = re.match(r"OpenSSH_(\d+)\.(\d+)", kex.software)
    out.metrics[f"probe.{endpoint}.kex_algorithms"] = float(len(lists["kex"]))
    out.findings.append(Finding("security.ssh.banner", Severity.INFO, endpoint, f"banner: {kex.banner}",
                                "", value=kex.banner, data={"algorithms": lists,
                                                            "openssh": ".".join(m.groups()) if m else None}))
    out.summary = f"probe {endpoint}: {kex.software}"
    return out


def check_ssh(options: SshOptions) -> CheckOutput:
    from upkeeper.tasks.security._common import guarded

    out = guarded("security.ssh", options.config, lambda: check_config(options))
    for ep in options.probe:
        res = guarded("security.ssh", ep, lambda ep=ep: check_probe(ep, options.timeout))  # type: ignore[misc]
        out.findings.extend(res.findings)
        out.metrics.update(res.metrics)
    return out


@task
class SecuritySsh(Task[SshOptions]):
    """Evaluate sshd's effective configuration (``sshd -T``) against Lynis SSH-7408: PermitRootLogin,
    PasswordAuthentication, MaxAuthTries, X11/agent/TCP forwarding, LogLevel, ClientAliveInterval …;
    optionally probe endpoints for their banner and weak algorithms as ssh-audit does."""

    name = "security.ssh"
    summary = "sshd configuration against Lynis SSH-7408, banner and weak algorithms"
    target_kinds = ("host",)
    Options = SshOptions
    category = "security"
    default_timeout = 120

    def run(self, ctx: TaskContext, options: SshOptions) -> Result:
        out = check_ssh(options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
