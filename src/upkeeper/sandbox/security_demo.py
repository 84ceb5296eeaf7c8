"""The demo's security sandbox: an nginx TLS site, two DNS servers, an auth.log and an sshd_config.

Planted on purpose, all at warning level so ``make demo`` passes while showing findings:
a certificate with 20 days left, a site missing CSP/HSTS/Referrer-Policy, ``server_tokens``
left on, a zone with a single NS record, a brute-force run in the auth.log, password
authentication and X11 forwarding in the sshd config.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from upkeeper.sandbox._util import free_port, make_traversable
from upkeeper.sandbox.dns import DnsServer
from upkeeper.sandbox.nginx import NginxServer, server_block
from upkeeper.sandbox.tls import self_signed

if TYPE_CHECKING:
    from collections.abc import Callable

    from upkeeper.sandbox.demo import Sandbox

SITE_EXTRA = """
        ssl_protocols TLSv1.2 TLSv1.3;
        add_header X-Frame-Options DENY always;
        add_header X-Content-Type-Options nosniff always;
        location ~ /\\.(?!well-known) { deny all; }
        location / { try_files $uri /index.html; }
"""
ZONE = {
    ("shop.example.", "A"): ["127.0.0.1"],
    ("shop.example.", "MX"): ["10 mail.shop.example."],
    ("shop.example.", "TXT"): ['"v=spf1 mx -all"'],
    ("shop.example.", "NS"): ["ns1.shop.example."],
    ("www.shop.example.", "CNAME"): ["shop.example."],
}
SSHD_CONFIG = """\
# sandbox sshd_config evaluated by the demo's security audit
PermitRootLogin prohibit-password
PasswordAuthentication yes
X11Forwarding yes
MaxAuthTries 4
LogLevel VERBOSE
ClientAliveInterval 300
"""


def auth_log(now: datetime) -> str:
    """Two hours of a web server's auth.log ending now: a deploy login and a brute force from one address."""
    lines = []
    t0 = now - timedelta(hours=2)

    def line(t: datetime, msg: str, prog: str = "sshd[812]") -> None:
        lines.append(f"{t:%b} {t.day:>2} {t:%H:%M:%S} web1 {prog}: {msg}")

    line(t0, "Accepted publickey for deploy from 198.51.100.10 port 50122 ssh2: ED25519 SHA256:Zm9v")
    for i in range(30):
        t = t0 + timedelta(minutes=30, seconds=5 * i)
        user = ["admin", "root", "ubuntu", "test", "oracle"][i % 5]
        line(t, f"Failed password for {'invalid user ' if user != 'root' else ''}{user} from 203.0.113.66 "
                f"port {41000 + i} ssh2")
    line(t0 + timedelta(hours=1), "pam_unix(cron:session): session opened for user root(uid=0)", "CRON[990]")
    return "\n".join(lines) + "\n"


def start(sb: Sandbox, say: Callable[[str], None]) -> None:
    say("starting the security sandbox (TLS site, DNS servers)…")
    base = sb.base / "security"
    www = base / "www"
    www.mkdir(parents=True, exist_ok=True)
    make_traversable(base)
    os.chmod(www, 0o755)
    (www / "index.html").write_text("<html><head><script src=\"/app.js\"></script></head><body>shop</body></html>\n")
    os.chmod(www / "index.html", 0o644)
    cert = self_signed(base / "tls", "localhost", days=20, hosts=["localhost", "127.0.0.1"])
    tls_port, http_port = free_port(), free_port()
    servers = (server_block(base, tls_port, www, cert=cert.cert, key=cert.key, extra=SITE_EXTRA)
               + server_block(base, http_port, www,
                              extra=f"        return 301 https://127.0.0.1:{tls_port}$request_uri;\n"))
    nginx = NginxServer(base / "nginx", port=tls_port, servers=servers)
    nginx.start()
    sb.services.append(nginx)
    dns_a, dns_b = DnsServer(ZONE).start(), DnsServer(ZONE).start()
    sb.services += [dns_a, dns_b]
    sb.cleanup_paths.append(base)
    (base / "auth.log").write_text(auth_log(datetime.now(UTC)))
    (base / "sshd_config").write_text(SSHD_CONFIG)
    site_url = f"https://127.0.0.1:{tls_port}/"
    sb.targets["site"] = {"kind": "http", "url": site_url, "description": "sandbox TLS site (self-signed)"}
    sb.targets["web"] = {**nginx.target(), "url": site_url}
    ca = str(cert.cert)
    sb.job_options["tls-check"] = {"ca_file": ca}
    sb.job_options["dns-check"] = {
        "resolvers": [dns_a.address, dns_b.address], "zones": ["shop.example"], "timeout": 2,
        "records": [{"name": "shop.example", "type": "A", "expected": ["127.0.0.1"]},
                    {"name": "shop.example", "type": "MX", "expected": ["10 mail.shop.example"]},
                    {"name": "www.shop.example", "type": "CNAME", "expected": ["shop.example"]}]}
    audit: dict[str, Any] = {
        # host-level checks describe the machine the demo runs on, not the sandbox: run them on a real host
        "skip": ["firewall", "updates", "processes"],
        "ssh": {"config": str(base / "sshd_config")},
        "logins": {"source": "file", "auth_log": str(base / "auth.log")},
        "permissions": {"paths": [str(cert.key)]},
        "headers": {"verify": ca, "http_url": f"http://127.0.0.1:{http_port}/"},
        "exposed_files": {"verify": ca, "timeout": 5},
        "cors": {"verify": ca},
        "tls": {"ca_file": ca},
        "dns": sb.job_options["dns-check"],
    }
    sb.job_options["security-audit"] = audit
    sb.job_options["compliance-report"] = {"output_dir": str(sb.base / "reports")}
    sb.facts["security_site"] = site_url
