"""network.tls: certificates and protocols of TLS endpoints.

For each host:port: days left (warning 30, critical 7 or expired), a Let's Encrypt
certificate with fewer than 25 days left (certbot renews at 30, so renewal is failing) -- day
counts for a 90-day certificate, scaled to a shorter-lived one's lifetime --, chain validity
against the system CAs (or ``ca_file``), hostname match, key size, SHA-1 signatures, and whether
TLS 1.0 or 1.1 is still offered (testssl.sh's protocol check, done with Python's ssl module at
OpenSSL security level 0).  A server that only speaks TLS 1.0/1.1 still has its certificate checked
(read over the old protocol), and a critical finding says current clients cannot connect.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from upkeeper import lazy
from upkeeper.config.targets import HttpTarget, NginxTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.tasks.security._common import CheckOutput, guarded

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509 import oid as x509_oid
else:
    x509 = lazy.module("cryptography.x509")
    ec = lazy.module("cryptography.hazmat.primitives.asymmetric.ec")
    rsa = lazy.module("cryptography.hazmat.primitives.asymmetric.rsa")
    x509_oid = lazy.module("cryptography.x509.oid")

LETSENCRYPT_ORG = "Let's Encrypt"
#: endpoints checked at the same time
MAX_PARALLEL = 8
FULL_LIFETIME_DAYS = 90  # what warning_days, critical_days and letsencrypt_days are meant for


class TlsOptions(TaskOptions):
    endpoints: list[str] = Field(
        default_factory=list, description="host:port endpoints (default: the target's URL, port 443 for https). "
                "Source: upkeeper (not set by default)")
    server_name: str | None = Field(None, description="name sent in SNI and matched against the certificate "
                                    "(default: the endpoint's host). Source: upkeeper (not set by default)")
    ca_file: str | None = Field(None, description="CA bundle to verify against instead of the system CAs. "
            "Source: upkeeper (not set by default)")
    warning_days: int = Field(30, ge=0, description="warn when fewer days are left (for a 90-day certificate; "
                              "scaled to a shorter lifetime, e.g. 15 for 45 days). Source: the maintenance "
                              "procedures (renewal at 30 days; certbot >= 4.0 renews at a third of the lifetime)")
    critical_days: int = Field(7, ge=0, description="critical when fewer days are left (scaled like warning_days). "
                               "Source: upkeeper default (one week to react)")
    letsencrypt_days: int = Field(25, ge=0, description="a Let's Encrypt certificate with fewer days left means "
                                  "automatic renewal is failing (scaled like warning_days). Source: certbot renews "
                                  "at a third of the lifetime, 30 of 90 days (certbot 4.0 changelog)")
    min_rsa_bits: int = Field(2048, description="smallest acceptable RSA key. Source: NIST SP 800-57 / CA/B Forum")
    min_ec_bits: int = Field(256, description="smallest acceptable EC key. Source: NIST SP 800-57")
    check_legacy_protocols: bool = Field(True, description="try TLS 1.0 and 1.1 handshakes. Source: testssl.sh -p")
    timeout: float = Field(10, gt=0, description="seconds per connection. Source: upkeeper default")

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                parse_endpoint(text)
            except TaskError as exc:
                raise ValueError(f"{exc.message} ({exc.hint.removeprefix('Try: ')})" if exc.hint
                                 else exc.message) from None
        return v


@dataclass
class Endpoint:
    host: str
    port: int
    name: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(text: str, server_name: str | None = None) -> Endpoint:
    hint = "Try: host:port, e.g. example.com:443 or [2001:db8::1]:443, or an https:// URL"
    if "://" in text:
        u = urlsplit(text)
        host = u.hostname or ""
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise TaskError(f"invalid endpoint {text!r}: the port is not a number from 1 to 65535", hint) from None
    else:
        host, _, port_s = text.rpartition(":") if text.count(":") == 1 or text.startswith("[") else (text, "", "")
        host = host.strip("[]") or text
        if port_s and not (port_s.isdigit() and 0 < int(port_s) < 65536):
            raise TaskError(f"invalid endpoint {text!r}: port {port_s!r} is not a number from 1 to 65535", hint)
        port = int(port_s) if port_s else 443
    if not host:
        raise TaskError(f"invalid endpoint {text!r}", hint)
    return Endpoint(host, port, server_name or host)


def _sni(ep: Endpoint) -> str | None:
    """The server name sent in SNI: none for an IP address; a name without its trailing dot (RFC 6066 § 3: a
    fully qualified "shop.example." is sent as "shop.example" — a server matching SNI exactly gave its default
    certificate, and the check then reported a hostname mismatch for a correct one)."""
    try:
        ipaddress.ip_address(ep.name)
        return None
    except ValueError:
        return ep.name.rstrip(".") or ep.name


def _legacy_context(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> ssl.SSLContext | None:
    """A non-verifying client that may use old protocols (OpenSSL security level 0); None when this
    machine's OpenSSL refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = minimum
            ctx.maximum_version = maximum
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ssl.SSLError, ValueError):
            return None
    return ctx


def _handshake_certificate(ep: Endpoint, ctx: ssl.SSLContext, timeout: float) -> tuple[bytes, str, str]:
    with socket.create_connection((ep.host, ep.port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=_sni(ep)) as s:
        der = s.getpeercert(binary_form=True)
        if not der:
            raise TaskError(f"{ep}: the server sent no certificate")
        cipher = s.cipher()
        return der, s.version() or "?", cipher[0] if cipher else "?"


def fetch_certificate(ep: Endpoint, timeout: float) -> tuple[bytes, str, str, bool]:
    """The server's certificate, protocol and cipher, and whether it took an old-protocol client: with today's
    client defaults, or -- when the server refuses those at the TLS level (it offers only TLS 1.0/1.1, or only
    weak ciphers) -- with a client that still speaks the old protocols, so that its certificate is checked all
    the same."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        return (*_handshake_certificate(ep, ctx, timeout), False)
    except ssl.SSLError:
        legacy = _legacy_context(ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED)
        if legacy is None:
            raise
        try:
            return (*_handshake_certificate(ep, legacy, timeout), True)
        except (OSError, ssl.SSLError):
            pass
        raise


@dataclass
class ChainCheck:
    """The chain verified (``reason`` None); did not verify (``reason``); or could not be checked because
    a client with today's defaults could not complete a handshake at all (``handshake``)."""

    reason: str | None = None
    handshake: str | None = None
    unchecked: str | None = None  # the connection itself failed (timeout, reset): nothing known about the chain


def verify_chain(ep: Endpoint, ca_file: str | None, timeout: float) -> ChainCheck:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=_sni(ep)):
            return ChainCheck()
    except ssl.SSLCertVerificationError as exc:
        return ChainCheck(reason=str(exc.verify_message or exc.reason or exc))
    except ssl.SSLError as exc:
        return ChainCheck(handshake=str(exc.reason or exc))
    except OSError as exc:
        return ChainCheck(unchecked=str(exc))


def hostname_matches(cert: x509.Certificate, name: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(name)
        return ip in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    try:  # an internationalized name is in the certificate as its A-label (xn--…), as it is sent in SNI
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    for pattern in san.get_values_for_type(x509.DNSName):
        p = pattern.lower().rstrip(".")
        if p == name:
            return True
        if p.startswith("*.") and "." in name and name.split(".", 1)[1] == p[2:]:
            return True
    return False


def legacy_protocol_offered(ep: Endpoint, version: ssl.TLSVersion, timeout: float) -> bool | None:
    """True/False, or None when this machine's OpenSSL cannot even try that protocol."""
    ctx = _legacy_context(version, version)
    if ctx is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with socket.create_connection((ep.host, ep.port), timeout=timeout) as raw, \
                    ctx.wrap_socket(raw, server_hostname=_sni(ep)) as s:
                return s.version() in ("TLSv1", "TLSv1.1")
        except ssl.SSLError as exc:
            if "no protocols available" in str(exc).lower():
                return None
            return False
        except OSError:
            return False


def _name(cert_name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    attrs = cert_name.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else ""


def check_endpoint(ep: Endpoint, options: TlsOptions, now: datetime) -> CheckOutput:
    out = CheckOutput()
    subject = str(ep)
    try:
        der, version, cipher, needed_legacy = fetch_certificate(ep, options.timeout)
    except (OSError, ssl.SSLError) as exc:
        out.findings.append(Finding("network.tls_unreachable", Severity.CRITICAL, subject,
                                    f"no TLS handshake with {ep}: {exc}", "check that the server is up and serves TLS"))
        out.summary = f"{ep}: unreachable"
        return out
    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).total_seconds() / 86400
    issuer_org = _name(cert.issuer, x509_oid.NameOID.ORGANIZATION_NAME)
    issuer_cn = _name(cert.issuer, x509_oid.NameOID.COMMON_NAME)
    subject_cn = _name(cert.subject, x509_oid.NameOID.COMMON_NAME)
    evidence = {"subject": subject_cn, "issuer": f"{issuer_org} {issuer_cn}".strip(), "not_after": not_after.isoformat(),
                "serial": format(cert.serial_number, "x"), "protocol": version, "cipher": cipher}
    out.metrics[f"{ep}.days_left"] = round(days_left, 2)
    out.metrics[f"{ep}.not_after_ts"] = not_after.timestamp()
    if days_left <= 0:
        out.findings.append(Finding("network.tls_expired", Severity.CRITICAL, subject,
                                    f"certificate expired on {not_after:%Y-%m-%d %H:%M} UTC", "renew it now",
                                    value=round(days_left, 1), threshold=0, data=evidence))
    # the day thresholds are for a 90-day certificate: a shorter-lived one (Let's Encrypt's 45-day and 6-day
    # profiles, an internal CA's) renews proportionally earlier -- certbot >= 4.0 at a third of the lifetime
    lifetime = (not_after - cert.not_valid_before_utc).total_seconds() / 86400
    scale = lifetime / FULL_LIFETIME_DAYS if 0 < lifetime < FULL_LIFETIME_DAYS - 1 else 1.0
    warning_days, critical_days = options.warning_days * scale, options.critical_days * scale
    letsencrypt_days = options.letsencrypt_days * scale
    scaled = f"; thresholds scaled to its {lifetime:.3g}-day lifetime" if scale < 1 else ""
    evidence["lifetime_days"] = f"{lifetime:.3g}"
    if 0 < days_left < max(critical_days, warning_days):
        sev = Severity.CRITICAL if days_left < critical_days else Severity.WARNING
        threshold = critical_days if sev is Severity.CRITICAL else warning_days
        out.findings.append(Finding(
            "network.tls_expiry", sev, subject,
            f"certificate expires in {days_left:.1f} days ({not_after:%Y-%m-%d} UTC; threshold {threshold:.3g} days"
            f"{scaled})", "renew the certificate (certbot renew) and reload the server",
            value=round(days_left, 1), threshold=round(threshold, 2), data=evidence))
    if LETSENCRYPT_ORG in issuer_org and 0 < days_left < letsencrypt_days:
        out.findings.append(Finding(
            "network.tls_letsencrypt_renewal", Severity.CRITICAL if days_left < critical_days
            else Severity.WARNING, subject,
            f"Let's Encrypt certificate has {days_left:.1f} days left: automatic renewal (at a third of its "
            f"{lifetime:.3g}-day lifetime) is failing",
            "run 'certbot renew --dry-run' and read /var/log/letsencrypt/letsencrypt.log; check the timer/cron",
            value=round(days_left, 1), threshold=round(letsencrypt_days, 2), data=evidence))
    chain = verify_chain(ep, options.ca_file, options.timeout)
    if chain.handshake is not None and not needed_legacy:
        # today's defaults did connect a moment ago: this handshake broke off (EOF, reset), the server is fine
        chain = ChainCheck(unchecked=chain.handshake)
    not_before = cert.not_valid_before_utc
    if chain.reason is not None:
        message = f"certificate chain does not verify: {chain.reason}"
        hint = "serve the full chain (fullchain.pem) from a trusted CA"
        # OpenSSL names the failure, not the certificate: say which one when the server's own is not it
        if chain.reason == "certificate has expired" and days_left > 0:
            message += (f" -- not the server's certificate (valid until {not_after:%Y-%m-%d} UTC) but a CA "
                        "certificate of its chain: an intermediate it sends, or the root it chains to")
            hint = ("serve the CA's current intermediate (fullchain.pem of the latest renewal, not an old chain "
                    "file); if the root expired, reissue from a current root")
        elif chain.reason == "certificate is not yet valid" and not_before > now:
            message += (f" -- the server's certificate starts on {not_before:%Y-%m-%d %H:%M} UTC, "
                        f"{(not_before - now).total_seconds() / 3600:.1f} h from now by this machine's clock")
            hint = "check the clocks of this machine and of the server that issued the certificate"
        elif chain.reason == "certificate is not yet valid":
            message += " -- not the server's certificate but a CA certificate of its chain"
            hint = "check this machine's clock; serve the CA's current intermediate"
        if not (chain.reason == "certificate has expired" and days_left <= 0):  # already network.tls_expired
            out.findings.append(Finding("network.tls_chain", Severity.CRITICAL, subject, message, hint,
                                        data=evidence))
    if chain.unchecked is not None:
        out.findings.append(Finding(
            "network.tls_chain_unchecked", Severity.WARNING, subject,
            f"the chain could not be verified: the verifying connection failed ({chain.unchecked}) after the "
            "certificate was read", "check the server's connection limits and load; the next run retries",
            data=evidence))
    if chain.handshake is not None:
        out.findings.append(Finding(
            "network.tls_handshake", Severity.CRITICAL, subject,
            f"a client with today's defaults (TLS 1.2 or later, OpenSSL security level 2) cannot connect: "
            f"{chain.handshake}; the certificate was read over {version}, its chain could not be verified",
            "enable TLS 1.2 and 1.3 with modern ciphers (nginx: ssl_protocols TLSv1.2 TLSv1.3;)",
            value=version, data=evidence))
    if not hostname_matches(cert, ep.name):
        out.findings.append(Finding(
            "network.tls_hostname", Severity.CRITICAL, subject,
            f"certificate is not valid for {ep.name} (subject {subject_cn or '—'})",
            "issue a certificate whose subjectAltName includes this name", value=ep.name, data=evidence))
    key = cert.public_key()
    bits = getattr(key, "key_size", 0)
    weak_key = (isinstance(key, rsa.RSAPublicKey) and bits < options.min_rsa_bits) or (
        isinstance(key, ec.EllipticCurvePublicKey) and bits < options.min_ec_bits) or (
        # by the certificate's key algorithm: cryptography ≥ 51 warns (deprecated) at any use of its DSA classes
        cert.public_key_algorithm_oid == x509_oid.PublicKeyAlgorithmOID.DSA)
    out.metrics[f"{ep}.key_bits"] = float(bits)
    if weak_key:
        out.findings.append(Finding(
            "network.tls_key_size", Severity.CRITICAL, subject,
            f"{type(key).__name__.replace('PublicKey', '').lstrip('_')} key of {bits} bits is too small",
            f"use RSA ≥ {options.min_rsa_bits} bits or EC ≥ {options.min_ec_bits} bits", value=bits))
    algo = cert.signature_hash_algorithm
    if algo is not None and algo.name in ("sha1", "md5"):
        out.findings.append(Finding("network.tls_signature", Severity.WARNING, subject,
                                    f"certificate signed with {algo.name}", "reissue with SHA-256", value=algo.name))
    if options.check_legacy_protocols:
        untestable = []
        for label, v in (("TLS 1.0", ssl.TLSVersion.TLSv1), ("TLS 1.1", ssl.TLSVersion.TLSv1_1)):
            offered = legacy_protocol_offered(ep, v, options.timeout)
            if offered is None:
                untestable.append(label)
            elif offered:
                out.findings.append(Finding(
                    "network.tls_legacy_protocol", Severity.WARNING, subject, f"{label} is still offered",
                    "disable it (nginx: ssl_protocols TLSv1.2 TLSv1.3;)", value=label))
        if untestable:
            out.findings.append(Finding(
                "network.tls_legacy_untestable", Severity.INFO, subject,
                f"this machine's OpenSSL cannot attempt {' and '.join(untestable)}, so it was not tested", ""))
    out.summary = f"{ep}: {days_left:.0f} days left, {version}"
    return out


def endpoints_for(ctx: TaskContext, options: TlsOptions) -> list[Endpoint]:
    if options.endpoints:
        return [parse_endpoint(e, options.server_name) for e in options.endpoints]
    t = ctx.target
    url = t.url if isinstance(t, HttpTarget | NginxTarget) else None
    if url and url.startswith("https://"):
        return [parse_endpoint(url, options.server_name)]
    raise TaskError(f"job {ctx.job!r} has no TLS endpoint to check",
                    "Try: an https:// target url, or the 'endpoints' option (host:port)")


def check_ca_file(path: str) -> None:
    """TaskError naming ``ca_file`` when OpenSSL cannot load it (missing, unreadable, no certificate in it):
    otherwise every endpoint's check would stop at the chain with the bare OS or OpenSSL error."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        reason = (exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror) or str(exc)
        raise TaskError(f"ca_file {path!r} cannot be used: {reason}",
                        "Try: the path of a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), readable by "
                        "upkeeper's user") from None


def check_tls(endpoints: list[Endpoint], options: TlsOptions, now: datetime) -> CheckOutput:
    if options.ca_file:
        check_ca_file(options.ca_file)
    out = CheckOutput()
    parts = []
    # endpoints are checked at the same time (network waits, one thread each, at most MAX_PARALLEL): one after the
    # other, a few slow ones (each up to five connections of `timeout` seconds) outlasted the job's timeout, and the
    # run was killed with no finding at all; findings stay in the endpoints' order
    from concurrent.futures import ThreadPoolExecutor

    def one(ep: Endpoint) -> CheckOutput:
        return guarded("network.tls", str(ep), lambda: check_endpoint(ep, options, now))

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(endpoints))),
                            thread_name_prefix="upk-tls") as pool:
        for res in pool.map(one, endpoints):
            out.extend(res)
            parts.append(res.summary)
    out.summary = "; ".join(parts)
    return out


@task
class NetworkTls(Task[TlsOptions]):
    """Check each TLS endpoint's certificate (days left, Let's Encrypt renewal, chain, hostname, key size,
    signature) and whether TLS 1.0/1.1 are still offered."""

    name = "network.tls"
    summary = "TLS certificates: expiry (30/7 days), renewal, chain, hostname, key size, TLS 1.0/1.1"
    target_kinds = ("http", "nginx", "host")
    Options = TlsOptions
    category = "monitoring"
    default_timeout = 120

    def run(self, ctx: TaskContext, options: TlsOptions) -> Result:
        out = check_tls(endpoints_for(ctx, options), options, ctx.now())
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
