"""The client behind proxies: the address nginx's realip module would take from ``X-Forwarded-For``,
``X-Real-IP``, the PROXY protocol header or any other request header (``CF-Connecting-IP``).

Behind a load balancer or a CDN every ``$remote_addr`` is the proxy's.  nginx fixes that itself with
``set_real_ip_from`` + ``real_ip_header X-Forwarded-For`` (+ ``real_ip_recursive on``), ``real_ip_header
X-Real-IP`` or ``real_ip_header proxy_protocol``; a log that writes ``$http_x_forwarded_for``,
``$http_x_real_ip`` or ``$proxy_protocol_addr`` instead can be read the same way here (``client_ip:
x_forwarded_for``, ``x_real_ip``, ``proxy_protocol``): when ``$remote_addr`` is a trusted proxy, the client is
the right-most address of the value that is not one (each proxy appends the address it got the request from,
so only the right-hand part is trustworthy: a client can send any header it likes, and that ends up on the
left).  nginx walks the three the same way (``ngx_http_get_forwarded_addr``); X-Real-IP and the PROXY
protocol address hold one address, so the walk takes it; so does any other header (``client_ip:
header:CF-Connecting-IP`` for ``real_ip_header CF-Connecting-IP``: nginx walks its value the same way, which
with ``real_ip_recursive on`` and a list of addresses gives this same client).  A value that is missing
(``-``) or no address leaves ``$remote_addr``, as nginx's realip module leaves the connection's address; the
resolver counts each line's :data:`OUTCOMES` so that the report can say how often that happened.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence

from upkeeper.logs.goaccess import valid_ip
from upkeeper.logs.samples import keep_first

#: the private and loopback ranges, where load balancers and reverse proxies usually live
DEFAULT_TRUSTED_PROXIES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1/128", "fc00::/7")
_CACHE_MAX = 200_000
#: what became of a line's passed-on client: ``used`` (the client is an address of it), ``absent`` (``-`` or
#: empty: $remote_addr), ``untrusted`` ($remote_addr is not a trusted proxy: the value is ignored, as nginx
#: does), ``invalid`` (from a trusted proxy, but its right-most entry is no address: $remote_addr, as nginx)
OUTCOMES = ("used", "absent", "untrusted", "invalid")
#: distinct example values kept per outcome (untrusted: the $remote_addr; invalid: the value)
EXAMPLES_KEPT = 5


def check_networks(entries: Iterable[str]) -> list[str]:
    """The entries as CIDR networks (``10.0.0.0/8``, ``203.0.113.7``, ``2001:db8::/32``); ValueError naming a bad one."""
    out = []
    for e in entries:
        try:
            out.append(str(ipaddress.ip_network(str(e).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{e!r} is no address or CIDR network (such as 10.0.0.0/8 or 2001:db8::/32)") from None
    return out


def _address(entry: bytes) -> bytes:
    """An X-Forwarded-For entry without a port (``[2001:db8::1]:443``, ``203.0.113.7:5000``), as nginx accepts it."""
    if entry[:1] == b"[":
        end = entry.find(b"]")
        return entry[1:end] if end > 0 else entry
    if entry.count(b":") == 1:
        return entry.split(b":", 1)[0]
    return entry


def _canonical(addr: bytes) -> bytes:
    """An IPv6 address as nginx writes ``$remote_addr`` once realip has taken it from a header (it parses the address
    and prints it back: lower case, the longest run of zero groups as ``::``, an IPv4-mapped one as ``::ffff:a.b.c.d``),
    so that ``2001:DB8::1`` and ``2001:db8:0:0::1`` are one client; an IPv4 address as it is."""
    if b":" not in addr:
        return addr
    try:
        ip = ipaddress.IPv6Address(addr.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return addr
    mapped = ip.ipv4_mapped
    return (f"::ffff:{mapped}" if mapped is not None else ip.compressed).encode("ascii")


class ClientResolver:
    """nginx's ``real_ip_header X-Forwarded-For; real_ip_recursive on;`` (or ``X-Real-IP``, ``proxy_protocol``)
    with ``set_real_ip_from`` = ``trusted``."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self._trusted: dict[bytes, bool] = {}
        self._pairs: dict[tuple[bytes, bytes | None], tuple[bytes, str]] = {}
        #: lines per outcome (see :data:`OUTCOMES`), and a few examples of the untrusted and invalid ones
        self.outcomes: Counter[str] = Counter()
        self.examples: dict[str, list[bytes]] = {"untrusted": [], "invalid": []}

    def trusted(self, addr: bytes) -> bool:
        known = self._trusted.get(addr)
        if known is None:
            if len(self._trusted) > _CACHE_MAX:
                self._trusted.clear()
            try:
                ip = ipaddress.ip_address(addr.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                known = False
            else:
                known = any(ip in net for net in self.networks)
            self._trusted[addr] = known
        return known

    def __call__(self, remote: bytes, xff: bytes | None) -> bytes:
        """The client: ``remote`` unless it is a trusted proxy, else the right-most address of ``xff`` that is not
        trusted (the left-most one when all are; a malformed entry stops the walk, as in nginx)."""
        return self.resolve(remote, xff)[0]

    def resolve(self, remote: bytes, xff: bytes | None) -> tuple[bytes, str]:
        """:meth:`__call__` and the outcome (one of :data:`OUTCOMES`)."""
        if not xff or xff == b"-":
            return remote, "absent"
        if not self.trusted(remote):
            return remote, "untrusted"
        addr, outcome = remote, "invalid"
        for entry in reversed(xff.split(b",")):
            e = _address(entry.strip(b" \t"))
            if not e:
                continue
            if not valid_ip(e):
                break
            addr, outcome = _canonical(e), "used"
            if not self.trusted(e):
                break
        return addr, outcome

    def column(self, hosts: Sequence[bytes], xffs: Sequence[bytes | None],
               weights: Sequence[int] | None = None) -> list[bytes]:
        """:meth:`__call__` for each row, computed once per distinct (address, header) pair; each row's outcome
        counted in :attr:`outcomes` (``weights``: how many lines each row stands for)."""
        pairs = self._pairs
        if len(pairs) > _CACHE_MAX:
            pairs.clear()
        out = []
        counts: Counter[str] = Counter()
        examples = self.examples
        for k, key in enumerate(zip(hosts, xffs, strict=True)):
            got = pairs.get(key)
            if got is None:
                got = pairs[key] = self.resolve(*key)
                kept = examples.get(got[1])
                if kept is not None:
                    keep_first(kept, key[0] if got[1] == "untrusted" else key[1] or b"", EXAMPLES_KEPT)
            out.append(got[0])
            counts[got[1]] += 1 if weights is None else weights[k]
        self.outcomes.update(counts)
        return out
