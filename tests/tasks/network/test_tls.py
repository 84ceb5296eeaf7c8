"""network.tls against real nginx TLS servers: a self-signed certificate expiring in 5 days, a legacy
server offering TLS 1.0/1.1 (OpenSSL security level 0), a small RSA key, a Let's Encrypt-named issuer."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from upkeeper.core.task import Finding, Severity
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.nginx import NginxServer, server_block
from upkeeper.sandbox.tls import self_signed
from upkeeper.tasks.network.tls import (
    Endpoint,
    TlsOptions,
    check_tls,
    legacy_protocol_offered,
    parse_endpoint,
)

LEGACY = """
        ssl_protocols TLSv1 TLSv1.1 TLSv1.2;
        ssl_ciphers DEFAULT:@SECLEVEL=0;
"""
LEGACY_ONLY = """
        ssl_protocols TLSv1 TLSv1.1;
        ssl_ciphers DEFAULT:@SECLEVEL=0;
"""


@dataclass
class TlsSites:
    expiring: Endpoint
    legacy: Endpoint
    letsencrypt: Endpoint
    legacy_only: Endpoint
    expiring_ca: Path
    legacy_ca: Path


@pytest.fixture(scope="module")
def tls_sites(services_dir: Path) -> Iterator[TlsSites]:
    base = services_dir / "tls-sec"
    (base / "www").mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    (base / "www" / "index.html").write_text("tls\n")
    issued_90_days_ago = datetime.now(UTC) - timedelta(days=85)  # 90-day certificates, as Let's Encrypt's
    soon = self_signed(base / "certs", "localhost", days=5, stem="soon", not_before=issued_90_days_ago)
    old = self_signed(base / "certs", "legacy.example", days=200, hosts=["legacy.example"], rsa_bits=1024,
                      stem="legacy")
    le = self_signed(base / "certs", "localhost", days=20, organization="Let's Encrypt", stem="le",
                     not_before=datetime.now(UTC) - timedelta(days=70))
    ports = free_port(), free_port(), free_port(), free_port()
    servers = (server_block(base, ports[0], base / "www", cert=soon.cert, key=soon.key)
               + server_block(base, ports[1], base / "www", cert=old.cert, key=old.key, extra=LEGACY)
               + server_block(base, ports[2], base / "www", cert=le.cert, key=le.key)
               + server_block(base, ports[3], base / "www", cert=soon.cert, key=soon.key, extra=LEGACY_ONLY))
    nginx = NginxServer(base, port=ports[0], servers=servers)
    nginx.start()
    yield TlsSites(Endpoint("127.0.0.1", ports[0], "localhost"), Endpoint("127.0.0.1", ports[1], "localhost"),
                   Endpoint("127.0.0.1", ports[2], "localhost"), Endpoint("127.0.0.1", ports[3], "localhost"),
                   soon.cert, old.cert)
    nginx.stop()


def by_check(out) -> dict[str, object]:
    return {f.check: f for f in out.findings}


def test_certificate_expiring_in_five_days_is_critical(tls_sites: TlsSites) -> None:
    opts = TlsOptions(ca_file=str(tls_sites.expiring_ca))
    out = check_tls([tls_sites.expiring], opts, datetime.now(UTC))
    f = by_check(out)
    assert set(f) == {"network.tls_expiry"}, out.findings  # chain verifies with its CA, name matches, EC P-256
    assert f["network.tls_expiry"].severity is Severity.CRITICAL
    assert 4.9 < f["network.tls_expiry"].value <= 5.0
    assert 4.9 < out.metrics[f"{tls_sites.expiring}.days_left"] <= 5.0


def test_untrusted_chain_and_wrong_name(tls_sites: TlsSites) -> None:
    ep = Endpoint(tls_sites.expiring.host, tls_sites.expiring.port, "shop.example")
    out = check_tls([ep], TlsOptions(), datetime.now(UTC))
    f = by_check(out)
    assert {"network.tls_expiry", "network.tls_chain", "network.tls_hostname"} <= set(f)
    assert "self-signed" in f["network.tls_chain"].message
    assert f["network.tls_hostname"].severity is Severity.CRITICAL


def test_legacy_protocols_and_small_key(tls_sites: TlsSites) -> None:
    if legacy_protocol_offered(tls_sites.legacy, __import__("ssl").TLSVersion.TLSv1, 5) is None:
        pytest.skip("this machine's OpenSSL cannot attempt TLS 1.0 even at security level 0")
    ep = Endpoint(tls_sites.legacy.host, tls_sites.legacy.port, "legacy.example")
    out = check_tls([ep], TlsOptions(ca_file=str(tls_sites.legacy_ca)), datetime.now(UTC))
    legacy = sorted(f.value for f in out.findings if f.check == "network.tls_legacy_protocol")
    assert legacy == ["TLS 1.0", "TLS 1.1"]
    assert by_check(out)["network.tls_key_size"].value == 1024
    # the modern server offers neither
    modern = check_tls([tls_sites.expiring], TlsOptions(ca_file=str(tls_sites.expiring_ca)), datetime.now(UTC))
    assert not [f for f in modern.findings if f.check.startswith("network.tls_legacy")]


def test_server_offering_only_tls_1_0_and_1_1_is_checked_not_called_unreachable(tls_sites: TlsSites) -> None:
    if legacy_protocol_offered(tls_sites.legacy_only, __import__("ssl").TLSVersion.TLSv1, 5) is None:
        pytest.skip("this machine's OpenSSL cannot attempt TLS 1.0 even at security level 0")
    out = check_tls([tls_sites.legacy_only], TlsOptions(ca_file=str(tls_sites.expiring_ca)), datetime.now(UTC))
    f = by_check(out)
    # the certificate is read over TLS 1.1 and checked: 5 days left; today's clients cannot connect at all
    assert set(f) == {"network.tls_expiry", "network.tls_handshake", "network.tls_legacy_protocol"}, out.findings
    assert f["network.tls_expiry"].severity is Severity.CRITICAL and 4.9 < f["network.tls_expiry"].value <= 5
    assert f["network.tls_handshake"].severity is Severity.CRITICAL
    assert f["network.tls_handshake"].value == "TLSv1.1" and "cannot connect" in f["network.tls_handshake"].message
    assert sorted(x.value for x in out.findings if x.check == "network.tls_legacy_protocol") == ["TLS 1.0", "TLS 1.1"]


def test_letsencrypt_under_25_days_means_renewal_failing(tls_sites: TlsSites) -> None:
    out = check_tls([tls_sites.letsencrypt], TlsOptions(check_legacy_protocols=False), datetime.now(UTC))
    f = by_check(out)
    assert f["network.tls_letsencrypt_renewal"].severity is Severity.WARNING
    assert f["network.tls_expiry"].severity is Severity.WARNING  # 20 days: below 30, above 7


def test_unreachable_endpoint_is_a_finding_not_a_crash() -> None:
    port = free_port()
    out = check_tls([parse_endpoint(f"127.0.0.1:{port}")], TlsOptions(timeout=2), datetime.now(UTC))
    assert [f.check for f in out.findings] == ["network.tls_unreachable"]


def test_slow_endpoints_are_checked_together_within_the_jobs_timeout(cli, make_config) -> None:  # type: ignore[no-untyped-def]
    """Endpoints that accept a connection and never answer the handshake: checked one after the other, six of
    them at timeout 3 s (18 s) outlasted a 10 s job timeout and the run was killed with no finding at all (the
    default 120 s and 10 s per connection: three slow endpoints). They are checked at the same time now (~3 s:
    the margin is for a loaded CI machine)."""
    silent = []
    for _ in range(6):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        silent.append(s)
    try:
        endpoints = [f"127.0.0.1:{s.getsockname()[1]}" for s in silent]
        cfg = make_config({"jobs": {"tls": {"task": "network.tls", "timeout": "10s",
                                            "options": {"endpoints": endpoints, "timeout": 3}}}})
        res = cli(["--config", cfg, "run", "tls", "--json"])
    finally:
        for s in silent:
            s.close()
    run = res.json()[0]
    assert run["status"] == "fail", run["summary"]  # not 'error: timed out'
    assert [f["subject"] for f in run["findings"] if f["check"] == "network.tls_unreachable"] == endpoints


def test_a_fully_qualified_name_is_sent_in_sni_without_its_trailing_dot(tmp_path: Path) -> None:
    """server_name 'shop.example.' (a fully qualified name) was sent in SNI as is; RFC 6066 says without the
    dot, and a server matching SNI exactly then served its default certificate: a CRITICAL hostname mismatch for
    a correct site. The server here is Python's ssl with an exact-match SNI callback, as such servers behave."""
    shop = self_signed(tmp_path / "shop", "shop.example", hosts=["shop.example"])
    default = self_signed(tmp_path / "default", "default.invalid", hosts=["default.invalid"])
    shop_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    shop_ctx.load_cert_chain(shop.cert, shop.key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(default.cert, default.key)
    names: list[str | None] = []

    def pick(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)
        if name == "shop.example":
            sock.context = shop_ctx

    server_ctx.sni_callback = pick  # type: ignore[assignment]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        ep = parse_endpoint(f"127.0.0.1:{listener.getsockname()[1]}", "shop.example.")
        out = check_tls([ep], TlsOptions(timeout=3, ca_file=str(shop.cert), check_legacy_protocols=False),
                        datetime.now(UTC))
    finally:
        stop.set()
        t.join(5)
        listener.close()
    assert "shop.example" in names and "shop.example." not in names, names
    assert [f.check for f in out.findings] == [], out.findings


def test_parse_endpoint_forms() -> None:
    assert str(parse_endpoint("https://example.com/x")) == "example.com:443"
    assert str(parse_endpoint("example.com:8443")) == "example.com:8443"
    assert parse_endpoint("[::1]:443").host == "::1"
    assert parse_endpoint("example.com", "www.example.com").name == "www.example.com"


def test_tls_job_via_cli(tls_sites: TlsSites, cli, make_config) -> None:
    url = f"https://127.0.0.1:{tls_sites.expiring.port}/"
    cfg = make_config({"targets": {"site": {"kind": "http", "url": url}},
                       "jobs": {"tls": {"task": "network.tls", "target": "site",
                                        "options": {"ca_file": str(tls_sites.expiring_ca),
                                                    "server_name": "localhost"}}}})
    res = cli(["--config", cfg, "run", "tls", "--json"])
    run = res.json()[0]
    assert run["status"] == "fail" and [f["check"] for f in run["findings"]] == ["network.tls_expiry"]


@pytest.mark.parametrize("endpoint", ["shop.example:https", "shop.example:70000", "https://shop.example:99999/"])
def test_bad_endpoint_is_a_config_error_naming_it(endpoint: str, cli, make_config) -> None:
    cfg = make_config({"jobs": {"tls": {"task": "network.tls", "options": {"endpoints": [endpoint]}}}})
    res = cli(["--config", cfg, "run", "tls"])
    assert res.code != 0 and "Traceback" not in res.output, res.output
    assert "endpoints" in res.output and endpoint in res.output and "port" in res.output, res.output


def _cert(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool,
          start: datetime, end: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_expired_intermediate_and_dates_say_which_certificate(services_dir: Path) -> None:
    """OpenSSL says only 'certificate has expired': with a valid server certificate that is its chain's CA, and
    an expired server certificate is reported once (network.tls_expired), not again as a chain error."""
    base = services_dir / "tls-dates"
    (base / "www").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    root = _cert("upkeeper test root", None, ca=True, start=now - timedelta(days=400), end=now + timedelta(days=900))
    inter = _cert("upkeeper test intermediate", root, ca=True, start=now - timedelta(days=400),
                  end=now - timedelta(days=2))
    leaf = _cert("shop.example", inter, ca=False, start=now - timedelta(days=10), end=now + timedelta(days=80))
    (base / "root.crt").write_bytes(_pem(root[0]))
    (base / "chain.crt").write_bytes(_pem(leaf[0], inter[0]))
    (base / "chain.key").write_bytes(leaf[1].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    expired = self_signed(base / "certs", "localhost", days=-3, stem="expired")
    future = self_signed(base / "certs", "localhost", days=90, stem="future", not_before=now + timedelta(days=2))
    ports = free_port(), free_port(), free_port()
    servers = (server_block(base, ports[0], base / "www", cert=base / "chain.crt", key=base / "chain.key")
               + server_block(base, ports[1], base / "www", cert=expired.cert, key=expired.key)
               + server_block(base, ports[2], base / "www", cert=future.cert, key=future.key))
    nginx = NginxServer(base, port=ports[0], servers=servers)
    nginx.start()
    try:
        opts = TlsOptions(ca_file=str(base / "root.crt"), check_legacy_protocols=False)
        out = check_tls([Endpoint("127.0.0.1", ports[0], "shop.example")], opts, now)
        assert [f.check for f in out.findings] == ["network.tls_chain"], out.findings
        assert "certificate has expired" in out.findings[0].message
        assert "not the server's certificate" in out.findings[0].message
        assert "intermediate" in out.findings[0].remediation
        opts = TlsOptions(ca_file=str(expired.cert), check_legacy_protocols=False)
        out = check_tls([Endpoint("127.0.0.1", ports[1], "localhost")], opts, now)
        assert [f.check for f in out.findings] == ["network.tls_expired"], out.findings
        opts = TlsOptions(ca_file=str(future.cert), check_legacy_protocols=False)
        out = check_tls([Endpoint("127.0.0.1", ports[2], "localhost")], opts, now)
        assert [f.check for f in out.findings] == ["network.tls_chain"], out.findings
        assert "the server's certificate starts on" in out.findings[0].message
        assert "clock" in out.findings[0].remediation
    finally:
        nginx.stop()


def test_internationalized_name_matches_its_a_label(services_dir: Path) -> None:
    """A certificate for bücher.example lists xn--bcher-kva.example; the job names the site as people write it."""
    base = services_dir / "tls-idn"
    (base / "www").mkdir(parents=True, exist_ok=True)
    cert = self_signed(base / "certs", "xn--bcher-kva.example", days=90, hosts=["xn--bcher-kva.example"], stem="idn")
    port = free_port()
    nginx = NginxServer(base, port=port, servers=server_block(base, port, base / "www", cert=cert.cert, key=cert.key))
    nginx.start()
    try:
        opts = TlsOptions(ca_file=str(cert.cert), check_legacy_protocols=False)
        for name in ("bücher.example", "xn--bcher-kva.example", "BÜCHER.example."):
            out = check_tls([Endpoint("127.0.0.1", port, name)], opts, datetime.now(UTC))
            assert out.findings == [], (name, out.findings)
        wrong = check_tls([Endpoint("127.0.0.1", port, "bucher.example")], opts, datetime.now(UTC))
        assert [f.check for f in wrong.findings] == ["network.tls_hostname"]
    finally:
        nginx.stop()


def test_short_lived_certificates_are_judged_by_their_lifetime(services_dir: Path) -> None:
    """Let's Encrypt's 45-day and 6-day certificates: certbot (>= 4.0) renews at a third of the lifetime (15
    days, 2-3 days), so a healthy one spends much of its life under 30 or even 7 days; the thresholds are
    for a 90-day certificate and scale to a shorter lifetime."""
    base = services_dir / "tls-short"
    (base / "www").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    made = {  # name: (days left, lifetime)
        "fresh45": (20, 45), "due45": (10, 45), "fresh6": (4, 6), "due6": (0.25, 6)}
    certs = {n: self_signed(base / "certs", "localhost", days=left, organization="Let's Encrypt", stem=n,
                            not_before=now - timedelta(days=life - left)) for n, (left, life) in made.items()}
    ports = {n: free_port() for n in made}
    nginx = NginxServer(base, port=ports["fresh45"], servers="".join(
        server_block(base, ports[n], base / "www", cert=c.cert, key=c.key) for n, c in certs.items()))
    nginx.start()
    try:
        def run(n: str) -> dict[str, Finding]:
            opts = TlsOptions(ca_file=str(certs[n].cert), check_legacy_protocols=False)
            out = check_tls([Endpoint("127.0.0.1", ports[n], "localhost")], opts, datetime.now(UTC))
            return {f.check: f for f in out.findings}

        assert run("fresh45") == {} and run("fresh6") == {}
        due45 = run("due45")  # 10 days left of 45: past certbot's 15-day renewal point
        assert set(due45) == {"network.tls_expiry", "network.tls_letsencrypt_renewal"}
        assert due45["network.tls_expiry"].severity is Severity.WARNING
        assert due45["network.tls_expiry"].threshold == 15
        assert "scaled to its 45-day lifetime" in due45["network.tls_expiry"].message
        due6 = run("due6")  # 6 hours left of 6 days
        assert due6["network.tls_expiry"].severity is Severity.CRITICAL
    finally:
        nginx.stop()


@pytest.mark.parametrize(("content", "says"), [(None, "No such file or directory"),
                                               ("not a certificate\n", "NO_CERTIFICATE_OR_CRL_FOUND")])
def test_unusable_ca_file_is_an_error_naming_it(tls_sites: TlsSites, tmp_path: Path, content: str | None,
                                                says: str, cli, make_config) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    cfg = make_config({"jobs": {"tls": {"task": "network.tls", "options": {
        "endpoints": [f"127.0.0.1:{tls_sites.expiring.port}"], "server_name": "localhost", "ca_file": str(ca)}}}})
    run = cli(["--config", cfg, "run", "tls", "--json"]).json()[0]
    assert run["status"] == "error", run
    assert f"ca_file '{ca}' cannot be used" in run["summary"] and says in run["summary"], run


@pytest.mark.parametrize("later", ["hang", "close"])
def test_endpoint_that_stops_answering_after_the_first_handshake_keeps_its_findings(tmp_path: Path,
                                                                                    later: str) -> None:
    """A loaded server (or one at its connection limit) may answer the first handshake and then leave the next
    connection hanging or close it at once: what the first one showed -- a certificate expiring in 5 days -- is
    still reported, and a broken-off handshake is not 'clients cannot connect'."""
    cert = self_signed(tmp_path, "localhost", days=5, stem="busy", not_before=datetime.now(UTC) - timedelta(days=85))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:  # the first connection: a real TLS handshake
            tls.recv(1)
        while True:  # later ones: accepted, and never answered or closed at once
            try:
                conn = listener.accept()[0]
            except OSError:
                return
            if later == "close":
                conn.close()
            else:
                held.append(conn)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        opts = TlsOptions(ca_file=str(cert.cert), timeout=1)
        out = check_tls([Endpoint("127.0.0.1", port, "localhost")], opts, datetime.now(UTC))
    finally:
        listener.close()
        for c in held:
            c.close()
    f = by_check(out)
    assert set(f) == {"network.tls_expiry", "network.tls_chain_unchecked"}, out.findings
    assert f["network.tls_expiry"].severity is Severity.CRITICAL
    if later == "hang":
        assert "timed out" in f["network.tls_chain_unchecked"].message
