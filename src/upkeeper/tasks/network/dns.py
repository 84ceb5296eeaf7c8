"""network.dns: records compared with expected values through several resolvers, NS count, propagation.

Every configured record is asked of every resolver.  When the resolvers that answered disagree
(a change is on its way; a timeout or SERVFAIL is a resolver failure, not an answer), the run
re-checks every ``propagation_interval`` (15 min) for up to ``propagation_poll_for``; the start
of the propagation is kept in the job's state so that later runs continue the watch until the
answers agree or ``propagation_timeout`` (24 h) has passed, which is critical.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from upkeeper import lazy
from upkeeper.config.types import Duration
from upkeeper.core.task import Finding, Result, Severity, StateStore, Task, TaskContext, TaskOptions, task
from upkeeper.fmt import human_duration
from upkeeper.tasks.security._common import CheckOutput

if TYPE_CHECKING:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.resolver
else:
    dns = lazy.module("dns", "exception", "flags", "message", "name", "query", "rcode", "rdata", "rdataclass",
                      "rdatatype", "resolver")

RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS", "CAA", "SRV"]
STATE_KEY = "dns"


class DnsRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="fully qualified name, e.g. example.com. Source: none (required)")
    type: RecordType = Field("A", description="record type. Source: upkeeper default")
    expected: list[str] | None = Field(
        None, description="expected values (any order), e.g. ['203.0.113.10'] or ['10 mail.example.com']; a TXT "
                "value is the whole text, however the zone splits it into 255-byte strings. "
                "Source: upkeeper (not set by default)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return valid_name(v)

    @model_validator(mode="after")
    def _values(self) -> DnsRecord:
        for value in (self.expected or []) if self.type != "TXT" else []:
            try:
                dns.rdata.from_text(dns.rdataclass.IN, self.type, value.strip(), origin=dns.name.root)
            except Exception as exc:
                raise ValueError(f"expected value {value!r} is not a valid {self.type} record ({exc}); "
                                 f"e.g. {EXAMPLES[self.type]}") from None
        return self


def valid_name(name: str) -> str:
    """The name as given, or ValueError saying why DNS cannot carry it (an empty label, a label over 63 bytes,
    a name over 255)."""
    try:
        dns.name.from_text(name.strip())
    except Exception as exc:
        raise ValueError(f"{name!r} is not a valid DNS name: {exc}") from None
    return name


EXAMPLES = {"A": "203.0.113.10", "AAAA": "2001:db8::10", "CNAME": "shop.example.com", "MX": "10 mail.example.com",
            "NS": "ns1.example.com", "CAA": "0 issue letsencrypt.org", "SRV": "10 5 5060 sip.example.com",
            "TXT": "v=spf1 mx -all"}


class DnsOptions(TaskOptions):
    resolvers: list[str] = Field(
        default_factory=list, description="resolvers as ip or ip:port (default: the system's from resolv.conf); "
        "list several public ones to see propagation. Source: upkeeper (not set by default)")
    records: list[DnsRecord] = Field(default_factory=list, description="records to check. "
            "Source: upkeeper (not set by default)")
    zones: list[str] = Field(default_factory=list, description="zones whose NS records to count. "
            "Source: upkeeper (not set by default)")
    min_ns: int = Field(2, ge=1, description="fewest NS records a zone should have. Source: RFC 1034 §4.1 (at "
                        "least two name servers)")
    propagation_interval: Duration = Field(
        default=timedelta(minutes=15), description="re-check interval while a change propagates. Source: the "
        "maintenance procedures")
    propagation_timeout: Duration = Field(
        default=timedelta(hours=24), description="a change not visible everywhere after this long is critical. "
        "Source: the maintenance procedures (and the common 24 h propagation bound)")
    propagation_poll_for: Duration = Field(
        default=timedelta(minutes=45), description="how long one run keeps re-checking before it leaves the rest "
        "to the next run (keep it below the job's interval). Source: upkeeper default")
    timeout: float = Field(5, gt=0, description="seconds per query. Source: upkeeper default")

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        return [valid_name(z) for z in v]

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, v: list[str]) -> list[str]:
        for spec in v:
            parse_resolver(spec)
        return v


@dataclass
class Answer:
    status: str          # NOERROR, NXDOMAIN, SERVFAIL, TIMEOUT …
    values: tuple[str, ...]

    def text(self) -> str:
        return ", ".join(self.values) if self.values else f"({self.status if self.status != 'NOERROR' else 'empty'})"


def _aware_time(v: Any) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def usable_entry(saved: Any) -> dict[str, Any]:
    """What the last run recorded of a record (its ``answer``, a ``propagating`` change), as far as it can be
    used: read back from history (damaged, another version's), it may be anything.  What cannot be used is left
    out: the record is watched again as on a first run."""
    if not isinstance(saved, dict):
        return {}
    entry = dict(saved)
    answer = entry.get("answer")
    if not (isinstance(answer, list) and all(isinstance(v, str) for v in answer)):
        entry["answer"] = None
    propagating = entry.get("propagating")
    if not (isinstance(propagating, dict) and _aware_time(propagating.get("since"))):
        entry["propagating"] = None
    elif not (propagating.get("from") is None or (isinstance(propagating["from"], list)
                                                  and all(isinstance(v, str) for v in propagating["from"]))):
        entry["propagating"] = {**propagating, "from": None}
    return entry


def parse_resolver(spec: str) -> tuple[str, int]:
    """(address, port) of 'ip', 'ip:port', 'ipv6' or '[ipv6]:port'; ValueError naming the mistake."""
    s = spec.strip()
    host, port = s, "53"
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
        host, port = host.rstrip("]"), port or "53"
    elif s.count(":") == 1:
        host, port = s.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"resolver {spec!r} is not an IP address: queries go straight to a resolver's address "
                         "(ip or ip:port, e.g. 1.1.1.1 or [2606:4700:4700::1111]:53)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"resolver {spec!r}: port {port!r} is not a number from 1 to 65535") from None
    return host, int(port)


def _txt(text: str) -> str:
    """A TXT value as the one string it means: a record longer than 255 bytes (DKIM keys, long SPF) travels
    as several character-strings ('"v=DKIM1; …" "…"') that a verifier concatenates, so the split is not
    part of the value.  Unquoted text is taken as it is; quoted text in DNS presentation form."""
    data = text.encode()
    if text.startswith('"'):
        try:
            rd = dns.rdata.from_text(dns.rdataclass.IN, "TXT", text)
            data = b"".join(rd.strings)  # type: ignore[attr-defined]
        except Exception:
            pass
    return '"' + data.decode("utf-8", "backslashreplace").replace('"', '\\"') + '"'


def canonical(rtype: str, value: str) -> str:
    """A value in DNS presentation form, so '10 mail.example.com' equals '10 mail.example.com.'."""
    text = value.strip()
    if rtype == "TXT":
        return _txt(text)
    try:
        rd = dns.rdata.from_text(dns.rdataclass.IN, rtype, text, origin=dns.name.root)
        out = rd.to_text()
    except Exception:
        out = text
    if rtype == "CAA":
        # RFC 8659 § 4.1: tags match case-insensitively ("0 ISSUE" is "0 issue"); the issuer of issue/issuewild is a
        # domain name, case-insensitive too (its parameters after ';' are left as they are)
        flags, _, rest = out.partition(" ")
        tag, _, val = rest.partition(" ")
        tag = tag.lower()
        if tag in ("issue", "issuewild") and val.startswith('"'):
            domain, sep, params = val[1:-1].partition(";")
            val = f'"{domain.lower()}{sep}{params}"'
        return f"{flags} {tag} {val}"
    return out.lower() if rtype in ("CNAME", "NS", "MX", "SRV") else out


def query(resolver: str, name: str, rtype: str, timeout: float) -> Answer:
    host, port = parse_resolver(resolver)
    # EDNS with a 1232-byte payload (the DNS Flag Day 2020 size): answers above the 512 bytes of plain DNS (TXT
    # sets with a DKIM key, long MX/NS sets) come over UDP instead of needing TCP, which firewalls often block
    q = dns.message.make_query(name, rtype, use_edns=0, payload=1232)
    try:
        r = dns.query.udp(q, host, port=port, timeout=timeout)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        return Answer("TIMEOUT", ())
    except (OSError, dns.exception.DNSException) as exc:
        return Answer(f"ERROR {type(exc).__name__}", ())
    status = dns.rcode.to_text(r.rcode())
    values = sorted({canonical(rtype, rd.to_text()) for rrset in r.answer
                     if dns.rdatatype.to_text(rrset.rdtype) == rtype for rd in rrset})
    return Answer(status, tuple(values))


def ask_all(resolvers: list[str], rec: DnsRecord, timeout: float) -> dict[str, Answer]:
    return {res: query(res, rec.name, rec.type, timeout) for res in resolvers}


def answered(answers: dict[str, Answer]) -> dict[str, Answer]:
    """The resolvers that gave an answer (NOERROR or NXDOMAIN); a timeout, SERVFAIL or REFUSED says nothing
    about the record."""
    return {r: a for r, a in answers.items() if a.status in ("NOERROR", "NXDOMAIN")}


def consistent(answers: dict[str, Answer]) -> bool:
    """At least one resolver answered and all that answered agree on the record's values.  NXDOMAIN and an
    empty NOERROR both say 'no such record': resolvers differ in which they give for the same zone (aggressive
    NSEC caching, RFC 8198; empty non-terminals), so that difference is not a change."""
    good = answered(answers)
    return len({a.values for a in good.values()}) == 1


def disagree(answers: dict[str, Answer]) -> bool:
    """Resolvers that answered give different values: a change is propagating."""
    return len({a.values for a in answered(answers).values()}) > 1


def system_resolvers() -> list[str]:
    try:
        return [str(n) for n in dns.resolver.Resolver().nameservers]
    except dns.resolver.NoResolverConfiguration:
        return []


def check_dns(options: DnsOptions, state: StateStore, now: datetime,
              sleep: Any = time.sleep, clock: Any = None) -> CheckOutput:
    out = CheckOutput()
    resolvers = options.resolvers or system_resolvers()
    if not resolvers:
        out.findings.append(Finding("network.dns_no_resolvers", Severity.WARNING, "host",
                                    "no resolvers configured and none in /etc/resolv.conf", "set 'resolvers'"))
        return out
    t0 = time.monotonic()
    clock = clock or (lambda: now + timedelta(seconds=time.monotonic() - t0))
    saved = state.get(STATE_KEY)  # (read back from history: damaged, another version's: anything)
    ledger: dict[str, Any] = dict(saved) if isinstance(saved, dict) else {}
    for rec in options.records:
        key = f"{rec.name.lower().rstrip('.')}/{rec.type}"
        subject = f"{rec.name} {rec.type}"
        answers = ask_all(resolvers, rec, options.timeout)
        entry = usable_entry(ledger.get(key))
        prior = entry.get("answer")
        propagating = entry.get("propagating")
        if disagree(answers) and propagating is None:
            propagating = {"since": now.isoformat(), "from": prior}
        polls = 0
        while disagree(answers) and propagating is not None:
            elapsed_run = time.monotonic() - t0
            since = datetime.fromisoformat(propagating["since"])
            if clock() - since >= options.propagation_timeout:
                break
            if elapsed_run + options.propagation_interval.total_seconds() > options.propagation_poll_for.total_seconds():
                break
            sleep(options.propagation_interval.total_seconds())
            polls += 1
            answers = ask_all(resolvers, rec, options.timeout)
        current = clock()
        failed = {r: a for r, a in answers.items() if a.status not in ("NOERROR", "NXDOMAIN")}
        for res, a in failed.items():
            out.findings.append(Finding("network.dns_resolver_failed", Severity.WARNING, f"{subject} @{res}",
                                        f"resolver {res} answered {a.status}", "check the resolver / the zone",
                                        value=a.status))
        by_answer: dict[tuple[str, ...], list[str]] = {}
        for res, a in answers.items():
            if res not in failed:
                by_answer.setdefault(a.values, []).append(res)
        if consistent(answers):
            values = list(next(iter(answered(answers).values())).values)
            n_answered = len(answers) - len(failed)
            if propagating is not None:
                since = datetime.fromisoformat(propagating["since"])
                out.findings.append(Finding(
                    "network.dns_propagated", Severity.INFO, subject,
                    f"change propagated to all {n_answered} resolvers that answered after {human_duration(current - since)}"
                    f" ({polls} re-check(s) in this run): now {', '.join(values) or '(empty)'}", "",
                    value=round((current - since).total_seconds(), 1), data={"from": propagating.get("from"),
                                                                          "to": values}))
            elif prior is not None and list(prior) != values:
                out.findings.append(Finding(
                    "network.dns_changed", Severity.INFO, subject,
                    f"changed from {', '.join(prior) or '(empty)'} to {', '.join(values) or '(empty)'}; "
                    f"consistent across {n_answered} resolvers", "", data={"from": prior, "to": values}))
            entry = {"answer": values, "propagating": None, "checked": current.isoformat()}
        elif not disagree(answers):
            # no resolver answered: nothing is known about the record (the failures are reported above)
            entry = {"answer": prior, "propagating": propagating, "checked": current.isoformat()}
        else:
            since = datetime.fromisoformat(propagating["since"]) if propagating else current
            age = current - since
            spread = {", ".join(k) or "(empty)": v for k, v in by_answer.items()}
            late = age >= options.propagation_timeout
            out.findings.append(Finding(
                "network.dns_propagation", Severity.CRITICAL if late else Severity.INFO, subject,
                (f"NOT propagated after {human_duration(age)}: " if late else
                 f"propagating for {human_duration(age)}: ") + "; ".join(
                    f"{len(v)} resolver(s) see {k}" for k, v in spread.items()),
                "check every authoritative server serves the new record (and the old TTLs)" if late else
                f"re-checked every {human_duration(options.propagation_interval)} until consistent",
                value=round(age.total_seconds()), threshold=options.propagation_timeout.total_seconds(),
                data={"answers": {r: a.text() for r, a in answers.items()}}))
            entry = {"answer": prior, "propagating": propagating, "checked": current.isoformat()}
        if rec.expected is not None:
            want = sorted(canonical(rec.type, v) for v in rec.expected)
            wrong = {r: a for r, a in answers.items() if r not in failed and list(a.values) != want}
            if wrong:
                everywhere = len(wrong) == len(answers)
                out.findings.append(Finding(
                    "network.dns_mismatch", Severity.CRITICAL if everywhere else Severity.WARNING, subject,
                    f"{'every resolver' if everywhere else f'{len(wrong)} of {len(answers)} resolvers'} answer "
                    + "; ".join(f"{r}: {a.text()}" for r, a in wrong.items()) + f" — expected {', '.join(want)}",
                    "fix the record at your DNS provider (or the expected value in the job)",
                    value=next(iter(wrong.values())).text(), threshold=", ".join(want),
                    data={"answers": {r: a.text() for r, a in answers.items()}}))
        ledger[key] = entry
        out.metrics[f"{key}.resolvers_agreeing"] = float(max((len(v) for v in by_answer.values()), default=0))
    for zone in options.zones:
        ns = None
        tried: dict[str, Answer] = {}
        for res in resolvers:
            a = query(res, zone, "NS", options.timeout)
            tried[res] = a
            if a.status == "NOERROR":
                ns = a
                break
        if ns is None:
            gone = [r for r, a in tried.items() if a.status == "NXDOMAIN"]
            if gone:
                out.findings.append(Finding(
                    "network.dns_zone_missing", Severity.CRITICAL, zone,
                    f"{zone} does not exist: NXDOMAIN from {', '.join(gone)}",
                    "check the domain's registration (expired? deleted?) and its delegation at the registrar; "
                    "or fix the zone's name in the job", data={"answers": {r: a.text() for r, a in tried.items()}}))
            else:
                out.findings.append(Finding(
                    "network.dns_ns_unknown", Severity.WARNING, zone,
                    f"no resolver answered the NS query for {zone}: "
                    + "; ".join(f"{r}: {a.status}" for r, a in tried.items()),
                    "check the resolvers (network.dns_resolver_failed) and the zone"))
            continue
        out.metrics[f"{zone}.ns_count"] = float(len(ns.values))
        if not ns.values:
            out.findings.append(Finding(
                "network.dns_ns_count", Severity.WARNING, zone,
                f"{zone} has no NS records: the name exists but is not a zone (a name inside one?)",
                "list the zone's apex (the domain you registered) in 'zones'", value=0, threshold=options.min_ns))
        elif len(ns.values) < options.min_ns:
            out.findings.append(Finding(
                "network.dns_ns_count", Severity.WARNING, zone,
                f"{zone} has {len(ns.values)} NS record(s) ({ns.text()}); one failing server takes the domain down",
                "add a second name server on another network (most DNS providers give 2–4)",
                value=len(ns.values), threshold=options.min_ns))
    state.set(STATE_KEY, ledger)
    out.summary = (f"{len(options.records)} record(s) via {len(resolvers)} resolver(s), {len(options.zones)} zone(s):"
                   f" {sum(1 for f in out.findings if f.severity is not Severity.INFO)} problem(s)")
    return out


@task
class NetworkDns(Task[DnsOptions]):
    """Ask every configured resolver for each record (A/AAAA/CNAME/MX/TXT …) and compare with the expected
    values; count NS records; after a change, re-check every 15 minutes until all resolvers agree or 24
    hours pass (critical)."""

    name = "network.dns"
    summary = "DNS records vs expected values across resolvers, NS count, propagation after changes"
    target_kinds = ("host",)
    Options = DnsOptions
    category = "monitoring"
    default_timeout = 3600

    def run(self, ctx: TaskContext, options: DnsOptions) -> Result:
        out = check_dns(options, ctx.state, ctx.now())
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
