"""Self-signed certificates for sandbox TLS servers (cryptography), with the expiry a test needs."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass
class Certificate:
    cert: Path
    key: Path
    not_after: datetime


def self_signed(directory: Path, name: str = "localhost", *, days: float = 90, hosts: list[str] | None = None,
                rsa_bits: int | None = None, organization: str = "upkeeper sandbox", stem: str = "server",
                not_before: datetime | None = None) -> Certificate:
    """Write ``<stem>.crt`` and ``<stem>.key`` (key mode 0600) valid for ``days`` from now (negative: expired)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    start = not_before or (now - timedelta(days=1) if days > 0 else now + timedelta(days=days) - timedelta(days=30))
    end = now + timedelta(days=days)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    alt = _alt_names(hosts or [name, "127.0.0.1"])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return _write(directory, stem, cert, key, end)


def issued(directory: Path, ca: Certificate, name: str, *, stem: str, hosts: list[str] | None = None,
           client: bool = False, days: float = 90) -> Certificate:
    """Write ``<stem>.crt`` and ``<stem>.key``: a leaf certificate for ``name`` signed by ``ca`` (a
    :func:`self_signed` one), for a server (subject alternative names ``hosts``) or, with ``client``, for
    mutual TLS."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    end = now + timedelta(days=days)
    alt = _alt_names(hosts or [name])
    usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _write(directory, stem, cert, key, end)


def _alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    """Subject alternative names: an IP address entry for each address, a DNS name for the rest."""
    alt: list[x509.GeneralName] = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    return alt


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, end: datetime
           ) -> Certificate:
    """``<stem>.crt`` (0644) and ``<stem>.key`` (0600, PKCS8 PEM, unencrypted) in ``directory``."""
    crt_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    os.chmod(crt_path, 0o644)
    return Certificate(crt_path, key_path, end)
