"""network.dns against local DNS servers built with dnspython: expected values, NS count, and a change
made mid-test that propagates from one resolver to the other."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from upkeeper.core.task import MemoryState, Severity
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.dns import DnsServer
from upkeeper.tasks.network.dns import DnsOptions, DnsRecord, canonical, check_dns

ZONE = {
    ("shop.example.", "A"): ["203.0.113.10"],
    ("shop.example.", "MX"): ["10 mail.shop.example."],
    ("shop.example.", "TXT"): ['"v=spf1 mx -all"'],
    ("shop.example.", "NS"): ["ns1.shop.example."],
    ("www.shop.example.", "CNAME"): ["shop.example."],
}
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def resolvers() -> Iterator[tuple[DnsServer, DnsServer]]:
    a, b = DnsServer(ZONE).start(), DnsServer(ZONE).start()
    yield a, b
    a.stop()
    b.stop()


def opts(servers: tuple[DnsServer, ...], **kw) -> DnsOptions:
    return DnsOptions(resolvers=[s.address for s in servers], timeout=2, **kw)


def test_records_match_expected_values(resolvers: tuple[DnsServer, DnsServer]) -> None:
    o = opts(resolvers, zones=["shop.example"], records=[
        DnsRecord(name="shop.example", type="A", expected=["203.0.113.10"]),
        DnsRecord(name="shop.example", type="MX", expected=["10 mail.shop.example"]),
        DnsRecord(name="shop.example", type="TXT", expected=["v=spf1 mx -all"]),
        DnsRecord(name="www.shop.example", type="CNAME", expected=["shop.example"]),
    ])
    out = check_dns(o, MemoryState(), NOW)
    # everything matches; the only problem is the zone's single name server
    assert [(f.check, f.severity) for f in out.findings] == [("network.dns_ns_count", Severity.WARNING)]
    assert out.metrics["shop.example.ns_count"] == 1
    assert all(r.queries > 0 for r in resolvers)


def test_wrong_record_everywhere_is_critical(resolvers: tuple[DnsServer, DnsServer]) -> None:
    o = opts(resolvers, records=[DnsRecord(name="shop.example", type="A", expected=["198.51.100.99"])])
    out = check_dns(o, MemoryState(), NOW)
    mismatch = [f for f in out.findings if f.check == "network.dns_mismatch"]
    assert len(mismatch) == 1 and mismatch[0].severity is Severity.CRITICAL
    assert "203.0.113.10" in mismatch[0].message


def test_change_propagates_within_one_run(resolvers: tuple[DnsServer, DnsServer]) -> None:
    a, b = resolvers
    state = MemoryState()
    rec = [DnsRecord(name="shop.example", type="A")]
    first = check_dns(opts(resolvers, records=rec), state, NOW)
    assert first.findings == []
    a.set("shop.example.", "A", ["203.0.113.20"])  # the change reaches the first resolver …
    timer = threading.Timer(0.6, b.set, args=("shop.example.", "A", ["203.0.113.20"]))  # … the second a bit later
    timer.start()
    try:
        out = check_dns(opts(resolvers, records=rec, propagation_interval="200ms", propagation_poll_for="10s"),
                        state, NOW + timedelta(hours=1))
    finally:
        timer.cancel()
    done = [f for f in out.findings if f.check == "network.dns_propagated"]
    assert len(done) == 1, out.findings
    assert done[0].data == {"from": ["203.0.113.10"], "to": ["203.0.113.20"]}
    assert 0 < done[0].value <= 10  # the second resolver changed ~0.6 s after the first
    assert state.get("dns")["shop.example/A"] == {"answer": ["203.0.113.20"], "propagating": None,
                                                   "checked": state.get("dns")["shop.example/A"]["checked"]}


def test_propagation_watch_spans_runs_until_24h(resolvers: tuple[DnsServer, DnsServer]) -> None:
    a, b = resolvers
    state = MemoryState()
    rec = [DnsRecord(name="shop.example", type="A")]
    no_poll = {"propagation_poll_for": "0s"}
    check_dns(opts(resolvers, records=rec, **no_poll), state, NOW)
    a.set("shop.example.", "A", ["203.0.113.30"])
    started = check_dns(opts(resolvers, records=rec, **no_poll), state, NOW + timedelta(hours=1))
    f = next(f for f in started.findings if f.check == "network.dns_propagation")
    assert f.severity is Severity.INFO and "1 resolver(s) see 203.0.113.30" in f.message
    still = check_dns(opts(resolvers, records=rec, **no_poll), state, NOW + timedelta(hours=12))
    assert next(f for f in still.findings if f.check == "network.dns_propagation").severity is Severity.INFO
    late = check_dns(opts(resolvers, records=rec, **no_poll), state, NOW + timedelta(hours=26))
    stuck = next(f for f in late.findings if f.check == "network.dns_propagation")
    assert stuck.severity is Severity.CRITICAL and "NOT propagated after" in stuck.message
    b.set("shop.example.", "A", ["203.0.113.30"])
    healed = check_dns(opts(resolvers, records=rec, **no_poll), state, NOW + timedelta(hours=27))
    assert [f.check for f in healed.findings] == ["network.dns_propagated"]


def test_dead_resolver_is_reported(resolvers: tuple[DnsServer, DnsServer]) -> None:
    a, _ = resolvers
    dead = DnsServer(ZONE)  # never started: nothing answers on its port
    o = DnsOptions(resolvers=[a.address, dead.address], timeout=0.3, propagation_poll_for="0s",
                   records=[DnsRecord(name="shop.example", type="A")])
    out = check_dns(o, MemoryState(), NOW)
    assert any(f.check == "network.dns_resolver_failed" and dead.address in f.subject for f in out.findings)


class ServFailResolver:
    """A real UDP DNS server that answers every query SERVFAIL, as a broken recursive resolver does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            r = dns.message.make_response(dns.message.from_wire(data))
            r.set_rcode(dns.rcode.SERVFAIL)
            self.sock.sendto(r.to_wire(), addr)

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def test_failing_resolver_is_not_a_propagating_change(resolvers: tuple[DnsServer, DnsServer]) -> None:
    a, _ = resolvers
    broken = ServFailResolver()
    try:
        state = MemoryState()
        rec = [DnsRecord(name="shop.example", type="A")]
        assert check_dns(DnsOptions(resolvers=[a.address], records=rec, timeout=1), state, NOW).findings == []
        both = DnsOptions(resolvers=[a.address, broken.address], records=rec, timeout=1,
                          propagation_interval="500ms", propagation_poll_for="5s")
        for hours in (1, 30):  # the record never changed: no watch, no re-checks, and no 'NOT propagated'
            t0 = time.monotonic()
            out = check_dns(both, state, NOW + timedelta(hours=hours))
            assert time.monotonic() - t0 < 2
            assert [(f.check, f.severity, f.value) for f in out.findings] == [
                ("network.dns_resolver_failed", Severity.WARNING, "SERVFAIL")]
        assert state.get("dns")["shop.example/A"]["propagating"] is None
        # the broken resolver alone says nothing about the record; the good one back: no 'change propagated'
        assert [f.check for f in check_dns(DnsOptions(resolvers=[broken.address], records=rec, timeout=1), state,
                                           NOW + timedelta(hours=31)).findings] == ["network.dns_resolver_failed"]
        assert check_dns(DnsOptions(resolvers=[a.address], records=rec, timeout=1), state,
                         NOW + timedelta(hours=32)).findings == []
    finally:
        broken.stop()


def test_long_txt_record_split_into_strings_matches_its_value() -> None:
    """A 2048-bit DKIM key is longer than one 255-byte character-string, so the zone (and every answer)
    carries it as several strings; the value, and what the job expects, is their concatenation."""
    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "q" * 300 + "IDAQAB"
    value = f"v=DKIM1; k=rsa; p={key}"
    split = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    with DnsServer({("mail._domainkey.shop.example.", "TXT"): [split, '"v=spf1 mx -all"']}) as server:
        o = DnsOptions(resolvers=[server.address], timeout=2, records=[
            DnsRecord(name="mail._domainkey.shop.example", type="TXT", expected=[value, "v=spf1 mx -all"]),
            DnsRecord(name="mail._domainkey.shop.example", type="TXT", expected=[split, '"v=spf1 mx -all"'])])
        assert check_dns(o, MemoryState(), NOW).findings == []
        wrong = DnsOptions(resolvers=[server.address], timeout=2, records=[
            DnsRecord(name="mail._domainkey.shop.example", type="TXT", expected=[value[:-1], "v=spf1 mx -all"])])
        assert [f.check for f in check_dns(wrong, MemoryState(), NOW).findings] == ["network.dns_mismatch"]


def test_canonical_forms() -> None:
    assert canonical("MX", "10 Mail.Example.com") == canonical("MX", "10 mail.example.com.")
    assert canonical("TXT", "v=spf1 -all") == '"v=spf1 -all"'
    assert canonical("A", "203.0.113.1") == "203.0.113.1"


def test_caa_tags_and_issuers_match_whatever_their_case() -> None:
    """A zone serving '0 ISSUE "LetsEncrypt.org"' (tags and the issuer domain are case-insensitive, RFC 8659)
    against the expected '0 issue letsencrypt.org': a CRITICAL mismatch telling the user to fix a correct record."""
    zone = {("shop.example.", "CAA"): ['0 ISSUE "LetsEncrypt.org"', '0 iodef "mailto:Ops@shop.example"']}
    server = DnsServer(zone).start()
    try:
        o = opts((server,), records=[DnsRecord(name="shop.example", type="CAA", expected=[
            "0 issue letsencrypt.org", '0 iodef "mailto:Ops@shop.example"'])])
        assert check_dns(o, MemoryState(), NOW).findings == []
        wrong = opts((server,), records=[DnsRecord(name="shop.example", type="CAA", expected=[
            "0 issue digicert.com", '0 iodef "mailto:Ops@shop.example"'])])
        assert [f.check for f in check_dns(wrong, MemoryState(), NOW).findings] == ["network.dns_mismatch"]
    finally:
        server.stop()


def test_dns_job_via_cli(resolvers: tuple[DnsServer, DnsServer], cli, make_config) -> None:
    cfg = make_config({"jobs": {"dns": {"task": "network.dns", "options": {
        "resolvers": [s.address for s in resolvers], "zones": ["shop.example"],
        "records": [{"name": "shop.example", "type": "A", "expected": ["203.0.113.10"]}]}}}})
    res = cli(["--config", cfg, "run", "dns", "--json"])
    run = res.json()[0]
    assert run["status"] == "warn" and [f["check"] for f in run["findings"]] == ["network.dns_ns_count"]


@pytest.mark.parametrize(("resolver", "says"), [("dns.google", "not an IP address"),
                                                ("127.0.0.1:abc", "not a number"),
                                                ("[::1]:70000", "not a number")])
def test_bad_resolver_is_a_config_error_naming_it(resolver: str, says: str, cli, make_config) -> None:
    cfg = make_config({"jobs": {"dns": {"task": "network.dns", "options": {
        "resolvers": [resolver], "records": [{"name": "shop.example", "type": "A"}]}}}})
    res = cli(["--config", cfg, "run", "dns"])
    text = res.output
    assert res.code != 0 and "Traceback" not in text, text
    assert "resolvers" in text and resolver in text and says in text, text


@pytest.mark.parametrize(("rtype", "value"), [("A", "203.0.113.010"), ("AAAA", "2001:db8::g"),
                                              ("MX", "mail.shop.example")])
def test_malformed_expected_value_is_a_config_error_naming_it(rtype: str, value: str, cli, make_config) -> None:
    """A value that no answer can ever equal would be a mismatch on every run, blaming the DNS provider."""
    cfg = make_config({"jobs": {"dns": {"task": "network.dns", "options": {
        "resolvers": ["127.0.0.1:53"], "records": [{"name": "shop.example", "type": rtype, "expected": [value]}]}}}})
    res = cli(["--config", cfg, "run", "dns"])
    assert res.code != 0 and "Traceback" not in res.output, res.output
    assert "records" in res.output and value in res.output and f"not a valid {rtype} record" in res.output, res.output


def test_zone_that_does_not_exist_is_critical_not_unanswered(resolvers: tuple[DnsServer, DnsServer]) -> None:
    """NXDOMAIN for a zone's NS is an answer -- the domain is gone (expired, deleted) or misspelt -- not a
    resolver that failed to answer; a name inside a zone has no NS records of its own."""
    dead = DnsServer(ZONE)  # never started
    o = DnsOptions(resolvers=[a.address for a in resolvers], timeout=1,
                   zones=["gone.example", "www.shop.example", "shop.example"])
    found = {f.subject: f for f in check_dns(o, MemoryState(), NOW).findings}
    assert found["gone.example"].check == "network.dns_zone_missing"
    assert found["gone.example"].severity is Severity.CRITICAL and "NXDOMAIN" in found["gone.example"].message
    assert found["www.shop.example"].check == "network.dns_ns_count"
    assert "not a zone" in found["www.shop.example"].message
    assert found["shop.example"].check == "network.dns_ns_count" and found["shop.example"].value == 1
    unanswered = check_dns(DnsOptions(resolvers=[dead.address], timeout=0.3, zones=["shop.example"]), MemoryState(),
                           NOW).findings
    assert [f.check for f in unanswered] == ["network.dns_ns_unknown"] and "TIMEOUT" in unanswered[0].message


class UdpLimitedServer(DnsServer):
    """Like a real server over UDP: an answer larger than the client allows (512 bytes without EDNS, else the
    EDNS payload size) is sent truncated (TC) for the client to retry over TCP -- which this one, like many
    firewalled resolvers, does not serve."""

    def _answer(self, wire: bytes) -> bytes | None:
        full = super()._answer(wire)
        q = dns.message.from_wire(wire)
        if full is None or len(full) <= max(512, q.payload if q.edns >= 0 else 0):
            return full
        r = dns.message.make_response(q)
        r.flags |= dns.flags.TC
        return r.to_wire()


def test_answer_over_512_bytes_is_read_without_tcp() -> None:
    """A zone's TXT records (a DKIM key, SPF, site verifications) easily pass 512 bytes: asked without EDNS, the
    answer comes truncated and only a TCP retry could read it."""
    key = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "q" * 300 + "IDAQAB"
    values = [f'"v=DKIM1; k=rsa; p={key[:200]}" "{key[200:]}"', '"v=spf1 mx include:_spf.example.net -all"',
              '"google-site-verification=' + "v" * 43 + '"']
    with UdpLimitedServer({("shop.example.", "TXT"): values}) as server:
        want = [f"v=DKIM1; k=rsa; p={key}", "v=spf1 mx include:_spf.example.net -all",
                "google-site-verification=" + "v" * 43]
        o = DnsOptions(resolvers=[server.address], timeout=1,
                       records=[DnsRecord(name="shop.example", type="TXT", expected=want)])
        assert check_dns(o, MemoryState(), NOW).findings == []


def test_nxdomain_and_empty_answer_agree_that_there_is_no_record() -> None:
    """For a name without the record, one resolver may say NXDOMAIN and another an empty NOERROR (it knows the
    name exists, e.g. an empty non-terminal like _domainkey); both mean 'no such record': no propagation."""
    with DnsServer({("shop.example.", "A"): ["203.0.113.10"]}) as nx, \
            DnsServer({("shop.example.", "A"): ["203.0.113.10"], ("_dmarc.shop.example.", "A"): ["203.0.113.9"]}) as nodata:
        rec = [DnsRecord(name="_dmarc.shop.example", type="TXT")]
        o = DnsOptions(resolvers=[nx.address, nodata.address], timeout=1, records=rec,
                       propagation_interval="200ms", propagation_poll_for="2s")
        state = MemoryState()
        for hours in (0, 30):
            t0 = time.monotonic()
            assert check_dns(o, state, NOW + timedelta(hours=hours)).findings == []
            assert time.monotonic() - t0 < 1.5
        missing = DnsOptions(resolvers=[nx.address, nodata.address], timeout=1, records=[
            DnsRecord(name="_dmarc.shop.example", type="TXT", expected=["v=DMARC1; p=reject"])])
        mismatch = check_dns(missing, MemoryState(), NOW).findings
        assert [(f.check, f.severity) for f in mismatch] == [("network.dns_mismatch", Severity.CRITICAL)]
        assert "(NXDOMAIN)" in mismatch[0].message and "(empty)" in mismatch[0].message


@pytest.mark.parametrize(("where", "name", "says"), [("records", "shop..example", "label is empty"),
                                                     ("zones", "a" * 64 + ".example", "> 63 octets")])
def test_invalid_dns_name_is_a_config_error_naming_it(where: str, name: str, says: str, cli, make_config) -> None:
    options = {"resolvers": ["127.0.0.1"], "records": [{"name": name}]} if where == "records" else {
        "resolvers": ["127.0.0.1"], "zones": [name]}
    cfg = make_config({"jobs": {"dns": {"task": "network.dns", "options": options}}})
    res = cli(["--config", cfg, "run", "dns"])
    assert res.code != 0 and "Traceback" not in res.output, res.output
    assert where in res.output and "not a valid DNS name" in res.output and says in res.output, res.output


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
                     | st.sampled_from(["2025-03-01T11:00:00+00:00", "2025-03-01T11:00:00", "203.0.113.10"]),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(
                         st.sampled_from(["answer", "propagating", "since", "from", "checked"]), c, max_size=3),
                     max_leaves=10)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_json, st.dictionaries(st.just("shop.example/A"), _json, min_size=1)))
@example(["x"])  # dict(['x']): ValueError
@example({"shop.example/A": 5})  # dict(5): TypeError
@example({"shop.example/A": {"answer": 5}})  # list(5): TypeError
@example({"shop.example/A": {"propagating": {"since": "2025-03-01T11:00:00"}}})  # naive - aware: TypeError
@example({"shop.example/A": {"propagating": {"since": 5}}})
def test_a_damaged_saved_state_is_watched_again(resolvers: tuple[DnsServer, DnsServer], saved: object) -> None:
    """The state network.dns keeps in history (another version's, or damaged) was used as read: a record's entry
    that is not a dict, an answer that is not a list, a propagation start that is no time with a zone crashed the
    check at every run (the state was never written again).  What cannot be used is left out: watched again."""
    state = MemoryState()
    state.set("dns", saved)
    out = check_dns(opts(resolvers, records=[DnsRecord(name="shop.example", type="A")], propagation_poll_for="0s"),
                    state, NOW)
    assert state.get("dns")["shop.example/A"]["answer"] == ["203.0.113.10"]
    assert all(f.check in ("network.dns_changed", "network.dns_propagated") for f in out.findings), out.findings
