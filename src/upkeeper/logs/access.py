"""The access-log scanner: buffers of complete lines in, mergeable aggregates out.

Speed comes from never touching a line in Python when it can be avoided:

* A buffer (a few MB of complete lines) is cut into columns with ``bytes.split``
  on ``"`` and on single spaces, following the format's :class:`SplitPlan`;
  the columns are plain lists, sliced with strides.  Structure is verified for
  the whole buffer at once (quote count, one newline per "glue" segment,
  token counts, empty/literal token positions).
* Aggregation feeds whole columns to C-implemented ``Counter.update``,
  ``set.update``, ``zip``, ``map`` and ``itertools.compress``.
* Validation and classification (IP syntax, dates, status codes, endpoint
  normalization, attack patterns, bots) run once per *distinct* value.
* Anything unusual — a buffer whose structure does not check out, a row with
  an invalid value — goes to :class:`~upkeeper.logs.goaccess.GoAccessLineParser`,
  the line-by-line port of GoAccess's parser, which is the reference semantics.
  A failing buffer is bisected, so one bad line costs a few small re-splits.

An :class:`Accumulator` lives in one process; :meth:`Accumulator.partial`
reduces it to an :class:`AccessPartial` (picklable) and :func:`merge` adds
partials from several processes.  :func:`summarize` turns the result into the
report dictionary.
"""

from __future__ import annotations

import heapq
import ipaddress
import re
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import accumulate, compress, repeat
from operator import is_, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar, cast

from upkeeper.fmt import printable
from upkeeper.logs.classify import (
    ABSOLUTE_URI,
    CONDITIONAL_PROBES,
    FRONT_PAGES,
    LOCAL_STATUS_FILES,
    OPEN_PROXY,
    PROBE_CATEGORIES,
    WordFilter,
    absolute_host,
    attack_categories,
    attack_category,
    counted_category,
    endpoints_and_paths,
    is_bot,
    nginx_uri,
    page_assets,
    path_matcher,
    referer_exploit,
    request_method,
    request_path,
    scanner_name,
    sensitive_file,
    sensitive_requests,
)
from upkeeper.logs.clientip import DEFAULT_TRUSTED_PROXIES, EXAMPLES_KEPT, OUTCOMES, ClientResolver
from upkeeper.logs.goaccess import (
    STATIC_EXTENSIONS,
    ULL_MAX,
    GoAccessLineParser,
    LineError,
    StaticMatcher,
    djb2,
    fault_kind,
    normalize_agent,
    normalize_referer,
    parse_date,
    parse_epoch,
    parse_requests,
    parse_seconds,
    parse_size,
    parse_time,
    size_out_of_range,
    status_code,
    trim,
    valid_ip,
    valid_offset,
    valid_status,
)
from upkeeper.logs.logins import ATTEMPT_FILES as ATTEMPT_FILES
from upkeeper.logs.logins import DEFAULT_LOGIN_PATHS as DEFAULT_LOGIN_PATHS
from upkeeper.logs.logins import KNOWN_LOGIN_FAILURES as KNOWN_LOGIN_FAILURES
from upkeeper.logs.logins import LOGIN_FAILURE_DEFAULT as LOGIN_FAILURE_DEFAULT
from upkeeper.logs.logins import STATUS_SPEC_FORMS as STATUS_SPEC_FORMS
from upkeeper.logs.logins import LoginPath as LoginPath
from upkeeper.logs.logins import attempts_only as attempts_only
from upkeeper.logs.logins import parse_statuses as parse_statuses
from upkeeper.logs.logins import status_codes as status_codes
from upkeeper.logs.masking import mask_line, quote_mask
from upkeeper.logs.nginx_format import (
    COMBINED,
    COMBINED_TIMED,
    LIST_BLANK,
    LISTS,
    MAIN,
    NAMED_FORMATS,
    SplitPlan,
    TokenSpec,
    Var,
    client_header,
    client_variables,
    format_variables,
    has_variable,
    parse_format,
    split_plan,
    to_goaccess,
)
from upkeeper.logs.samples import keep_first, merge_first
from upkeeper.logs.stats import percentiles as percentiles
from upkeeper.logs.stats import top as top

if TYPE_CHECKING:
    from upkeeper.logs.arrowscan import ArrowScanner
    from upkeeper.logs.parallel import Unit

NL = b"\n"
#: line_faults codes (upkeeper.logs.goaccess.FAULT_KINDS) -> 1 for a line the parser reads, else 0; -> 1 for a fault
_TO_PARSER = bytes(int(c == 1) for c in range(256))
_TO_FAULT = bytes(int(c >= 2) for c in range(256))
ARROW_MIN_BUFFER = 256 << 10  # buffers this large go to the pyarrow path when the format allows
SLOW_BLOCK_LINES = 48  # below this many lines a failing buffer is parsed line by line
FORWARDED_KEEP = 100  # distinct values of the passed-on client (X-Forwarded-For…) kept: enough to tell a proxy's log
CACHE_MAX = 50_000  # request lines whose endpoint and path are remembered (then the cache starts over)
#: distinct request lines counted raw before they are turned into GoAccess's keys (and 404 and vhost paths) in
#: the middle of a scan: a log of cache-busting query strings (jQuery's ``?_=<ms>``) or of a flood of distinct
#: URLs would otherwise hold every one of them twice over (raw, then as a key) until the scan ends
REQUESTS_FOLD = 400_000
#: GoAccess's requested-file keys a scanning process keeps: past it, the least seen are left out (their hits
#: still counted, per path too) until half remain — the top lists' counts may then miss at most what was left out
#: of one key per round (``ga_pruned_error``), and the report says so. A 1 GB log of ordinary traffic stays below
REQUESTS_KEPT = 500_000


class LoginMatcher:
    """Which request lines are login attempts, and which statuses mean that one failed."""

    def __init__(self, entries: Iterable[str | LoginPath]) -> None:
        rules = [LoginPath.of(e) for e in entries]
        self.any_rx = path_matcher([r.path for r in rules])
        self.rules = [(path_matcher([r.path]), r.codes()) for r in rules]

    def failure_codes(self, path: bytes) -> frozenset[int] | None:
        """The statuses meaning a failed login on ``path`` (those of every entry matching it); None: no login path."""
        if not self.any_rx.fullmatch(path):
            return None
        return frozenset().union(*(codes for rx, codes in self.rules if rx.fullmatch(path)))

    def of_request(self, raw: bytes) -> tuple[bytes, frozenset[int]] | None:
        """A ``POST`` to a login path (as nginx routes it: :func:`nginx_uri`): that path, without the query, and
        its failure statuses; else None."""
        if request_method(raw) != b"POST":
            return None
        path = nginx_uri(request_path(raw))
        codes = self.failure_codes(path)
        return None if codes is None else (path, codes)


@dataclass(frozen=True)
class ScanOptions:
    """What a scanning process needs to know (picklable; sent to worker processes)."""

    log_format: str = COMBINED
    static_extensions: tuple[str, ...] = STATIC_EXTENSIONS
    login_paths: tuple[str | LoginPath, ...] = DEFAULT_LOGIN_PATHS  # a bare path: LoginPath.of's statuses
    samples: int = 10
    fast: bool = True  # False forces the line-by-line parser (tests compare both)
    arrow: bool = True  # False keeps large buffers off the pyarrow path (upkeeper.logs.arrowscan)
    native_cut: bool = True  # False: the pyarrow path cuts lines with pyarrow kernels even where _cut is built
    #: False: every line the fast paths leave goes through the line parser one by one, the unparsable ones too (tests
    #: compare both); True: the C extension tells most unparsable lines apart first (Accumulator._slow_lines)
    native_faults: bool = True
    arrow_min_buffer: int = ARROW_MIN_BUFFER  # smaller buffers stay in Python (tests lower it)
    #: where the client address comes from: $remote_addr, or (behind trusted proxies) $http_x_forwarded_for,
    #: $http_x_real_ip, $proxy_protocol_addr or a header's $http_name: see nginx_format.client_header
    client_ip: str = "remote_addr"
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    #: paths the site serves on purpose (the job's public_paths): a request for one is no scanner probe (a WebDAV
    #: share, Spring Boot's actuator read by its admin server, a page named /info.php), nor an exposed file
    public_paths: tuple[str, ...] = ()
    #: paths whose query string carries what people type (the job's free_text_paths): SQL- or script-looking text
    #: only in the query string of a request for one is counted apart (:data:`FREE_TEXT`), not as an attack answered
    free_text_paths: tuple[str, ...] = ()


#: the attack categories that text typed into a search box may look like (see ``free_text_paths``)
FREE_TEXT_CATEGORIES = frozenset({"sql_injection", "xss"})
#: the mark of a learned category whose payload was only in the query string of a free-text path
FREE_TEXT = "~free_text"
_QUERY_PART = re.compile(rb"\?[^ \t]*")


#: the mark of a learned category whose payload was only in the query string of a free-text path asked for in an
#: absolute request line (``GET http://host/search?q=…``), with its host: typed text when the host is the site's own
FREE_TEXT_AT = FREE_TEXT + "@"
_HTTP_TARGET = re.compile(rb"https?://", re.I)


def free_text_category(learned: str, own: Callable[[str], bool] | None = None) -> tuple[str, bool]:
    """A learned attack category without its :data:`FREE_TEXT` mark, and whether it had one (one of
    :data:`FREE_TEXT_AT` only when ``own`` says its host is the site's own: see :func:`own_hosts`)."""
    cat, at, host = learned.rpartition(FREE_TEXT_AT)  # (a host holds no "@")
    if at:
        return cat, own is not None and own(host)
    return (learned[:-len(FREE_TEXT)], True) if learned.endswith(FREE_TEXT) else (learned, False)


TimeInfo = tuple[int, int, int]  # (YYYYMMDD, hour, minute)


_HOST_OF_URL = re.compile(rb"[a-z][a-z0-9+.-]{0,15}://(?:[^/?#@\s]*@)?(\[[0-9a-f:.]*\]|[^/?#:@\s\[\]]+)", re.I)
#: without ``server_names``, a host is the site's own when this many different clients named it in a referer: one
#: client (a prober sending ``Referer: http://evil.example/`` with ``GET http://evil.example/``) cannot make it so
REFERER_CLIENTS = 3


_J = TypeVar("_J")


def _judge_each(known: dict[bytes, _J], values: Iterable[bytes], judge: Callable[[bytes], _J],
                many: Callable[[list[bytes]], list[_J]] | None = None) -> dict[bytes, _J]:
    """``known`` with ``judge``'s verdict on each of ``values`` (distinct; iterated twice) it lacks (``many``'s, on
    all of them at once, when given: the same verdicts); it starts over past :data:`CACHE_MAX` (bounded memory: a
    million different agents or referers)."""
    new = [x for x in values if x not in known]
    if len(known) + len(new) > CACHE_MAX:
        known.clear()
        new = list(values)
    if many is not None:
        known.update(zip(new, many(new), strict=True))
        return known
    for x in new:
        known[x] = judge(x)
    return known


def _referer_host(referer: bytes) -> bytes | None:
    """The host a referer names (lower-cased, without a final dot), or None."""
    m = _HOST_OF_URL.match(normalize_referer(referer))
    return m.group(1).lower().rstrip(b".") if m is not None else None


_add_counts: Callable[[Any, Any], None]
try:  # Counter.update's loop for a mapping, in C
    from upkeeper.logs._cut import add_counts as _add_counts
except ImportError:  # pragma: no cover - built without a C compiler
    _add_counts = Counter.update

_path_top: Callable[[dict[bytes, int], list[dict[bytes, int]], int], list[tuple[bytes, int]] | None] | None
try:  # top_paths' sums and pre-selection, in C
    from upkeeper.logs._cut import path_top as _path_top
except ImportError:  # pragma: no cover - built without a C compiler (or before path_top)
    _path_top = None

_referer_hosts: Callable[[list[bytes]], list[bytes | None]] | None
_referer_hints: Callable[[list[bytes]], list[bool]] | None
try:  # _referer_host of many referers, and referer_exploit's prefilter, in C (built with the access-log cut)
    from upkeeper.logs._cut import referer_hints as _referer_hints
    from upkeeper.logs._cut import referer_hosts as _referer_hosts
except ImportError:  # pragma: no cover - an install without a C compiler (or an extension built before them)
    _referer_hosts = _referer_hints = None


def _referer_exploits(referers: list[bytes]) -> list[str | None]:
    """:func:`~upkeeper.logs.classify.referer_exploit` of each referer, read only where the C prefilter finds one of
    its hints (``_referer_hints``: the same as the function's own)."""
    assert _referer_hints is not None
    return [referer_exploit(x) if hint else None for x, hint in zip(referers, _referer_hints(referers), strict=True)]


def _client_network(ip: bytes) -> bytes:
    """A client as counted among a referer host's clients: an IPv4 address as is, an IPv6 one by its /64 (one
    machine has a whole /64 to pick addresses from)."""
    if b":" not in ip:
        return ip
    try:
        net = ipaddress.IPv6Network((ip.decode("latin-1").strip().strip("[]"), 64), strict=False)
    except ValueError:
        return ip
    return str(net.network_address).encode() + b"/64"


@dataclass
class AccessPartial:
    """Aggregates of some lines; :func:`merge` adds two of them."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    ignored: int = 0
    fast_lines: int = 0
    bytes_read: int = 0
    bandwidth: int = 0
    #: the invalid lines kept as samples, at most ``samples``: those first by (source, line) — the same ones however
    #: the log was cut among processes (``invalid_keys``: the key of each, in order)
    invalid_samples: list[dict[str, Any]] = field(default_factory=list)
    invalid_keys: list[tuple[str, bytes]] = field(default_factory=list)
    samples: int = 10
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    status: Counter[bytes | None] = field(default_factory=Counter)
    hosts: Counter[bytes] = field(default_factory=Counter)
    agents: Counter[bytes] = field(default_factory=Counter)  # normalized (GoAccess %u)
    referers: Counter[bytes] = field(default_factory=Counter)
    #: host a referer names -> up to REFERER_CLIENTS clients that sent one (an IPv6 client by its /64): a host is the
    #: site's own (an absolute request line for it no open-proxy probe) only when that many sent it (own_hosts)
    referer_clients: dict[bytes, set[bytes]] = field(default_factory=dict)
    static_paths: Counter[bytes] = field(default_factory=Counter)  # static files (not 404) by path
    not_found: Counter[bytes] = field(default_factory=Counter)  # 404 paths
    #: GoAccess's requested files: b"URL\\0METHOD\\0PROTOCOL" (one bytes object: compact) -> hits
    ga_requests: Counter[bytes] = field(default_factory=Counter)
    ga_static_hits: int = 0
    #: past REQUESTS_KEPT distinct keys, the requested files seen least were left out of ``ga_requests``
    #: (:meth:`Accumulator._fold_requests`): their hits, their hits per path (``all_paths`` stays exact), and how many
    #: hits a key still counted may miss at most (the sum of the counts left out at or below, round by round)
    ga_pruned_hits: int = 0
    ga_pruned_paths: Counter[bytes] = field(default_factory=Counter)
    ga_pruned_error: int = 0
    visitors: set[tuple[int, bytes, int]] = field(default_factory=set)  # (date, ip, djb2(agent))
    minutes: Counter[TimeInfo] = field(default_factory=Counter)
    latency: Counter[tuple[bytes, float]] = field(default_factory=Counter)  # (endpoint, ms)
    upstream: Counter[tuple[bytes, float]] = field(default_factory=Counter)
    endpoint_hits: Counter[bytes] = field(default_factory=Counter)
    endpoint_errors: Counter[tuple[bytes, bytes]] = field(default_factory=Counter)  # (endpoint, status) not 2xx
    nf_bursts: Counter[tuple[bytes, TimeInfo]] = field(default_factory=Counter)  # (ip, minute) 404s
    auth_failures: Counter[tuple[bytes, bytes, TimeInfo]] = field(default_factory=Counter)  # (ip, path, 10-min)
    #: (ip, 10-min) logins that succeeded: POSTs to a login path answered 2xx or 3xx but none of its failure
    #: statuses (a client with as many as its failures is many people behind one address, see security_summary)
    auth_successes: Counter[tuple[bytes, TimeInfo]] = field(default_factory=Counter)
    attacks: Counter[tuple[str, bytes, bytes | None]] = field(default_factory=Counter)  # (category, ip, status)
    #: per (learned) category, its first ``samples`` distinct request lines in byte order (samples.keep_first)
    attack_samples: dict[str, list[bytes]] = field(default_factory=dict)
    scanners: Counter[tuple[str, bytes]] = field(default_factory=Counter)  # (scanner, ip)
    #: requests for sensitive files (classify.SENSITIVE_FILES) answered 2xx: (resolved path, ip, status, bytes, minute)
    exposures: Counter[tuple[bytes, bytes, int, int, TimeInfo]] = field(default_factory=Counter)
    page_sizes: Counter[int] = field(default_factory=Counter)  # body sizes of the 2xx answers to GET / (catch-alls)
    #: (body size, resolved path) of the 2xx answers with a body to requests flagged as attacks or probes (any
    #: category, software probes too): what a catch-all answers paths that do not exist
    probe_sizes: Counter[tuple[int, bytes]] = field(default_factory=Counter)
    #: (category as learned, body size) of the 2xx answers to requests flagged as attacks: one with a catch-all's
    #: size is the site's one page, not an attack that worked
    attack_answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: GET endpoint (not a static file, not a sensitive one) -> the body size of every 2xx answer to it, or -1 when
    #: they differ: a catch-all answers the routes of a single-page app (or any path) with its one page
    route_sizes: dict[bytes, int] = field(default_factory=dict)
    has_latency: bool = False
    has_upstream: bool = False
    #: some distinct values (at most FORWARDED_KEEP) of the variable holding the client a proxy passed on
    #: ($http_x_forwarded_for, $http_x_real_ip, $proxy_protocol_addr): does it vary?
    forwarded: set[bytes] = field(default_factory=set)
    #: with client_ip other than remote_addr: lines per outcome of reading the passed-on client
    #: (clientip.OUTCOMES), and a few examples of the untrusted $remote_addr and the invalid values
    client_outcomes: Counter[str] = field(default_factory=Counter)
    client_examples: dict[str, list[bytes]] = field(default_factory=dict)
    #: per site, when the format logs $host, $server_name or $http_host: requests, (host, path) hits,
    #: (host, status) and (host, ms) of the timed requests
    vhosts: Counter[bytes] = field(default_factory=Counter)
    vhost_paths: Counter[tuple[bytes, bytes]] = field(default_factory=Counter)
    vhost_status: Counter[tuple[bytes, bytes | None]] = field(default_factory=Counter)
    vhost_latency: Counter[tuple[bytes, float]] = field(default_factory=Counter)


class Accumulator:
    """Aggregates lines in one process.  Feed it buffers of complete lines."""

    #: buffer size for :func:`upkeeper.logs.parallel.scan_unit`: with the line cut in C (upkeeper.logs._cut) the
    #: per-buffer columns are about one copy of the buffer, and 4 MB buffers scan ~20 % faster than 2 MB ones (a
    #: fixed number of kernel calls per buffer; 24 MB in one process: 0.37 -> 0.30 s); the 1 GB run's peak stays
    #: under 500 MB (466–480 MB); 8 MB buffers passed it (520 MB)
    chunk = 4 << 20

    def __init__(self, opts: ScanOptions) -> None:
        self.opts = opts
        ga = to_goaccess(opts.log_format, internal=True, client_ip=opts.client_ip)
        self.parser = GoAccessLineParser(ga.log_format, ga.date_format, ga.time_format)
        self.faults = self.parser.faults() if opts.native_faults else None
        self.plan: SplitPlan | None = split_plan(opts.log_format, opts.client_ip) if opts.fast else None
        self.sample_mask = quote_mask(opts.log_format)  # credential fields to hide in unparsed-line samples
        self.static_ext = tuple(e.lower().encode() for e in opts.static_extensions)
        self.logins = LoginMatcher(opts.login_paths)
        # compared with the lower-cased paths (as sensitive files and probes are): a path written as the site
        # spells it (/Actuator/*) matched nothing
        self.public = path_matcher([p.lower() for p in opts.public_paths]) if opts.public_paths else None
        self.free_text = (path_matcher([p.lower() for p in opts.free_text_paths]) if opts.free_text_paths
                          else None)
        self.has_vhost = any(isinstance(it, Var) and it.field == "v" for it in parse_format(opts.log_format))
        self.c_vreq: Counter[tuple[bytes, bytes]] = Counter()  # (host, request line)
        self.c_vlat: Counter[tuple[bytes, bytes]] = Counter()  # (host, request time token)
        # the client a proxy passed on ($http_x_forwarded_for, $http_x_real_ip, $proxy_protocol_addr), read as
        # nginx's realip module would when the format also logs the connection's address ($remote_addr)
        _address, passed = client_variables(format_variables(opts.log_format), opts.client_ip)
        self.has_passed = passed is not None
        self.resolver = (ClientResolver(opts.trusted_proxies)
                         if passed is not None and passed == client_header(opts.client_ip) else None)
        self.p = AccessPartial(samples=opts.samples)
        self.c_req: Counter[bytes] = Counter()
        self.c_req404: Counter[bytes] = Counter()
        self.c_ua: Counter[bytes] = Counter()
        self.c_ref: Counter[bytes] = Counter()
        self.c_lat: Counter[tuple[bytes, bytes]] = Counter()
        self.c_ulat: Counter[tuple[bytes, bytes]] = Counter()
        self.visitors: set[tuple[int, bytes, bytes]] = set()
        self.ep_of: dict[bytes, bytes] = {}
        self.ep_intern: dict[bytes, bytes] = {}
        self.static_of: dict[bytes, bytes | None] = {}  # request line -> its path if a static file
        self.attack_of: dict[bytes, str] = {}
        self.probe_path_of: dict[bytes, bytes] = {}  # attack request line -> its resolved path (answered 2xx)
        self.route_ok: dict[bytes, bool] = {}  # endpoint -> is it a route whose 2xx sizes are kept (route_sizes)
        self.sensitive_of: dict[bytes, bytes] = {}  # request line -> resolved path of a sensitive file
        self.page_of: set[bytes] = set()  # request lines asking for the front page (GET /, /index.html)
        self.ua_scanner: dict[bytes, str | None] = {}  # agent -> scanner_name's (bounded: CACHE_MAX)
        self.ref_exploit: dict[bytes, str | None] = {}  # referer -> referer_exploit's name (bounded: CACHE_MAX)
        self.ref_host: dict[bytes, bytes | None] = {}  # referer -> the host it names (bounded: CACHE_MAX)
        #: the request lines that are login attempts: their path and failure statuses (learned with the endpoints)
        self.login_of: dict[bytes, tuple[bytes, frozenset[int]]] = {}
        self.ip_ok: dict[bytes, bool] = {}  # client address -> valid (bounded: CACHE_MAX)
        self.status_ok: dict[bytes, bool] = {}
        self.has_rt = False
        self.has_urt = False
        self.times: TimeTokens | None = None
        self.is_static = StaticMatcher(self.static_ext)
        self.arrow: ArrowScanner | None = None
        self.arrow_tried = False
        if self.plan is not None:
            self.lit_b = {s.text: s.text.encode() for t in (self.plan.glue, *self.plan.middle) for s in t
                          if s.kind == "lit"}
            self.mid_lit = [m.encode() if m is not None else None for m in self.plan.middle_literal]
        #: the lists of upstream values made single tokens (see :meth:`_collapsed`): the C function, and where the
        #: list variables' tokens are in the split (``_split``'s column keys)
        self.collapse: Callable[[bytes, int], bytes | None] | None = None
        self.list_locs: list[tuple[str, int, int]] = []
        self.collapsed = False  # the buffer being fed has its lists collapsed: undone for the line parser
        if self.plan is not None and self.plan.list_marks:
            self._collapse_plan(self.plan)

    def _collapse_plan(self, plan: SplitPlan) -> None:
        """Collapse lists when the C extension can, and every unquoted list variable is a token of its own (no
        literal glued to it: the line parser reads a list from the variable's first byte, the collapse from the
        token's)."""
        specs = [("g", 0, t, spec) for t, spec in enumerate(plan.glue)]
        specs += [("m", j, t, spec) for j, toks in enumerate(plan.middle) for t, spec in enumerate(toks)]
        lists = [(w, j, t, spec) for w, j, t, spec in specs if spec.kind == "var" and spec.var in LISTS]
        if not lists or any(spec.prefix or spec.suffix for *_x, spec in lists):
            return
        try:
            from upkeeper.logs._cut import collapse_lists
        except ImportError:  # (built without a C compiler, or before collapse_lists: the lines with lists go to
            return           # the line parser, as they always did)
        self.collapse = collapse_lists
        self.list_locs = [(w, j, t) for w, j, t, _spec in lists]

    def _collapsed(self, buf: bytes, arrow: bool) -> bytes | None:
        """``buf`` with the blanks of its lists of upstream values ("0.800, 0.100", "0.004 : 0.010") made
        :data:`LIST_BLANK` (:func:`upkeeper.logs._cut.collapse_lists`), or None (no list, or it cannot be done).

        Such a line used to go to the line parser whole (10–40 µs): the split takes a token per value, and a list
        has blanks.  Collapsed, each list is one token, exactly the value the line parser reads there, and the
        line takes the fast paths.  What keeps the figures the line parser's: the collapse reads a list as its
        regex does (the C function's comment); a collapsed token anywhere but at a list variable sends the line
        to the line parser (the cut program's classes of the other unquoted values leave out ``LIST_BLANK``, and
        :meth:`_split` counts them); every line the line parser reads gets its blanks back first (:meth:`_slow`);
        and the upstream time column gets them back before it is counted."""
        plan = self.plan
        if self.collapse is None or plan is None or not any(m in buf for m in plan.list_marks):
            return None
        if arrow and (self.arrow is None or self.arrow.cutter is None):
            return None  # (the pyarrow cut's regex cannot leave the byte out of a class: RE2 reads UTF-8 there)
        return self.collapse(buf, 2 * plan.quotes)

    # -- input -------------------------------------------------------------------------------

    def sizes(self) -> dict[str, int]:
        """The lines read (``lines``) and the distinct values held (what a memory limit's message names): the request
        lines those counted raw since the last fold (:data:`REQUESTS_FOLD`) and those folded into GoAccess's keys."""
        return {"lines": self.p.lines, "distinct request lines": len(self.c_req) + len(self.p.ga_requests),
                "visitors": len(self.visitors),
                "client addresses": len(self.p.hosts), "user agents": len(self.c_ua), "referers": len(self.c_ref)}

    def feed(self, buf: bytes, source: str = "", offset: int = 0) -> None:
        """Aggregate ``buf``: complete lines, each ending with a newline."""
        if not buf:
            return
        self.p.bytes_read += len(buf)
        tail = b""
        if not buf.endswith(NL):  # a final line without newline (end of a rotated file)
            cut = buf.rfind(NL) + 1
            buf, tail = buf[:cut], buf[cut:]
        if buf:
            if self.plan is None:
                self._slow(buf, source, offset)
            elif (self.collapse is not None and LIST_BLANK in buf and buf.count(LIST_BLANK) <= len(buf) >> 12
                  and any(m in buf for m in self.plan.list_marks)):
                # the lines holding the collapse's byte (raw with escape=none: UTF-8's à, Р, a no-break space) are
                # read as they are, and the runs of lines between them collapsed: one such line sent the whole
                # buffer's lists to the line parser (39 MB, lists on half the lines, "à" on one in 1,000: 10.4 s,
                # not 0.5). Not when they are many (one per 4 KB): a run costs ~50 µs, and at one such line in 3
                # the buffer was read 3 times slower than whole, its lists by the line parser
                for start, end in _lines_apart(buf, LIST_BLANK):
                    self._feed_lines(buf[start:end], source, offset + start)
            else:
                self._feed_lines(buf, source, offset)
        if tail:
            self._slow(tail, source, offset + len(buf))
        if len(self.c_req) >= REQUESTS_FOLD or len(self.c_vreq) >= REQUESTS_FOLD:
            self._fold_if_many()

    def _feed_lines(self, buf: bytes, source: str, offset: int) -> None:
        """Aggregate ``buf`` (complete lines) on the fast paths, its lists collapsed where they can be."""
        arrow = len(buf) >= self.opts.arrow_min_buffer and self._arrow_scanner() is not None
        collapsed = self._collapsed(buf, arrow)
        if collapsed is not None:
            buf, self.collapsed = collapsed, True
        try:
            if arrow:
                assert self.arrow is not None
                self.arrow.feed(buf, source, offset)
            else:
                self._fast(buf, source, offset)
        finally:
            self.collapsed = False

    def _arrow_scanner(self) -> ArrowScanner | None:
        """The pyarrow scanner, made (and pyarrow imported) on the first large buffer."""
        if self.arrow is None and not self.arrow_tried:
            self.arrow_tried = True
            if self.opts.arrow:
                from upkeeper.logs.arrowscan import make_scanner

                self.arrow = make_scanner(self)
        return self.arrow

    def _fast(self, buf: bytes, source: str, offset: int, sifted: int = 0) -> None:
        n = buf.count(NL)
        cols = self._split(buf, n) if n else None
        if cols is None:
            if n <= SLOW_BLOCK_LINES:
                self._slow(buf, source, offset)
                return
            if sifted == 0 and self._sift(buf, source, offset):
                return
            if sifted < 2 and self._sift(buf, source, offset, blanks=True):
                return
            if self._none_fits(buf):  # the bisection would end at the line parser, every line with its offset
                self._slow(buf, source, offset)
                return
            cut = buf.find(NL, len(buf) // 2) + 1
            if cut <= 0 or cut >= len(buf):
                cut = buf.rfind(NL, 0, len(buf) - 1) + 1
            self._fast(buf[:cut], source, offset, sifted)
            self._fast(buf[cut:], source, offset + cut, sifted)
            return
        self._columns(cols, n, buf, source, offset)

    def _none_fits(self, buf: bytes) -> bool:
        """Whether no line of ``buf`` has the format's number of quotes (a buffer of empty lines, of lines of another
        format).  Then the split fails on every piece of it (a split that checks out has that many quotes on each
        line) and so does the sift (more than half of the lines set aside): bisected, it ends in blocks of
        :data:`SLOW_BLOCK_LINES` lines for the line parser, each line with its offset, as when the line parser reads it
        whole — which costs it no split, sift or Python call per block (a 200 KB buffer of empty lines took 0.7 s)."""
        plan = self.plan
        assert plan is not None
        want = 2 * plan.quotes
        if not want:
            return False
        if b'"' not in buf:
            return True
        lines = buf.split(NL)
        lines.pop()
        return want not in map(bytes.count, lines, repeat(b'"', len(lines)))

    def _sift(self, buf: bytes, source: str, offset: int, blanks: bool = False) -> bool:
        """Set aside the lines whose quote count is not the format's, then retry the rest at once; when that
        was done already (``blanks``), the lines whose unquoted text has other numbers of blanks than the format's.

        Garbage and truncated lines almost always have the wrong number of quotes; finding them
        directly costs one pass, where bisecting would re-split the buffer at every level.
        """
        plan = self.plan
        assert plan is not None
        want = 2 * plan.quotes
        # more than half of the lines with another number of quotes: not sifted (bisected).  Told at once where
        # the buffer holds too few quotes for half of its lines (empty lines, lines of another format), and before
        # a step per line: the bisection of a buffer of such lines sifted every piece of it, 20 MB/s, 0.3 MB/s for
        # one of empty lines
        n = buf.count(NL)
        if want and buf.count(b'"') < want * (n - n // 2):
            return False
        lines = buf.split(NL)
        lines.pop()  # buf ends with a newline
        counts = list(map(bytes.count, lines, repeat(b'"', len(lines))))
        if want and n - counts.count(want) > n // 2:
            return False
        if want:
            bad = [i for i, c in enumerate(counts) if c != want]
        else:
            bad = []
        if plan.list_marks:  # and the lines with a list of upstream values in their unquoted text
            skip = set(bad)
            bad += [i for i, ln in enumerate(lines) if i not in skip and _has_list(ln, plan.list_marks)]
            bad.sort()
        if blanks:  # blanks out of place (a value of a variable upkeeper knows nothing about, a truncated line)
            skip = set(bad)
            bad += [i for i, ln in enumerate(lines) if i not in skip and not _line_blanks_ok(ln, plan)]
            bad.sort()
        if not bad or len(bad) > len(lines) // 2:
            return False
        badset = set(bad)
        self._slow(b"".join(lines[i] + NL for i in bad), source, offset, fallback=True)
        good = b"".join(ln + NL for i, ln in enumerate(lines) if i not in badset)
        if good:
            self._fast(good, source, offset, sifted=2 if blanks else 1)
        return True

    # -- the split ---------------------------------------------------------------------------

    def _check(self, toks: list[bytes], tmpl: tuple[TokenSpec, ...], n: int, out: dict[Any, list[bytes]],
               where: str, seg: int) -> bool:
        width = len(tmpl)
        end = width * n
        if len(toks) != end + 1 or toks[-1]:
            return False
        for t, spec in enumerate(tmpl):
            col = toks[t:end:width]
            if spec.kind == "empty":
                if any(col):
                    return False
            elif spec.kind == "lit":
                if col.count(self.lit_b[spec.text]) != n:
                    return False
            else:
                if not spec.opaque and not all(col):
                    return False
                out[(where, seg, t)] = col
        return True

    def _split(self, buf: bytes, n: int) -> dict[Any, list[bytes]] | None:
        plan = self.plan
        assert plan is not None
        if b"\0" in buf or b'\\"' in buf:
            return None
        q = plan.quotes
        q2 = 2 * q
        out: dict[Any, list[bytes]] = {}
        if q:
            parts = buf.split(b'"')
            if len(parts) != q2 * n + 1:
                return None
            glue = parts[0::q2]
            if NL in glue[0] or not all(map(bytes.__contains__, glue[1:], repeat(NL, n))):
                return None
            g = b"".join(glue)
        else:
            parts = []
            g = buf
        if b"\\" in g or any(mark in g for mark in plan.list_marks):
            return None
        # each line's unquoted text has the format's number of blanks (a blank in one line's value cannot make up
        # for a token missing in another's): then every token is in its place on every line
        if not _blanks_ok(g.split(NL), plan.glue_blanks, n):
            return None
        if not self._check(g.replace(NL, b" ").split(b" "), plan.glue, n, out, "g", 0):
            return None
        for j, tmpl in enumerate(plan.middle):
            segs = parts[2 * j + 2::q2]
            lit = self.mid_lit[j]
            if lit is not None:
                if segs.count(lit) != n:
                    return None
                continue
            m = b" ".join(segs)
            if b"\\" in m or any(mark in m for mark in plan.list_marks):
                return None
            if not _blanks_ok(segs, plan.middle_blanks[j], n):
                return None
            if not self._check((m + b" ").split(b" "), tmpl, n, out, "m", j):
                return None
        for k in range(q):
            out[("q", k, 0)] = parts[2 * k + 1::q2]
        if self.collapsed:  # collapsed lists (see _collapsed) at list variables only; the upstream time's given
            held = buf.count(LIST_BLANK)  # back their blanks (the others are skipped: checked as tokens)
            if held:
                if sum(b"".join(out[loc]).count(LIST_BLANK) for loc in self.list_locs) != held:
                    return None
                loc = plan.fields.get("P")
                if loc is not None and loc in out:
                    out[loc] = [v.replace(LIST_BLANK, b" ") for v in out[loc]]
        return out

    # -- columns -> aggregates ---------------------------------------------------------------

    def _field(self, cols: dict[Any, list[bytes]], name: str) -> tuple[list[bytes] | None, TokenSpec | None]:
        plan = self.plan
        assert plan is not None
        loc = plan.fields.get(name)
        if loc is None:
            return None, None
        where, seg, tok = loc
        spec = None
        if where == "g":
            spec = plan.glue[tok]
        elif where == "m":
            spec = plan.middle[seg][tok]
        return cols[loc], spec

    def _columns(self, cols: dict[Any, list[bytes]], n: int, buf: bytes, source: str, offset: int) -> None:
        plan = self.plan
        assert plan is not None
        bad: set[int] = set()

        def mark(col: list[bytes], badvals: set[bytes]) -> None:
            if badvals:
                bad.update(i for i, v in enumerate(col) if v in badvals)

        # client address
        h, hspec = self._field(cols, "h")
        assert h is not None
        hs = set(h)
        new_ips = hs.difference(self.ip_ok)
        if len(self.ip_ok) + len(new_ips) > CACHE_MAX:  # bounded memory (a million clients): start over
            self.ip_ok.clear()
            new_ips = hs
        for ip in new_ips:
            self.ip_ok[ip] = _strip_ok(ip, hspec) and valid_ip(_strip(ip, hspec))
        mark(h, {ip for ip in hs if not self.ip_ok[ip]})
        # time
        tk, tspec = self._field(cols, "time")
        assert tk is not None and tspec is not None
        if self.times is None:
            self.times = TimeTokens(tspec, plan.time_var)
        parse_t = self.times
        tinfo: dict[bytes, TimeInfo | None] = parse_t.many(set(tk))
        mark(tk, {t for t, v in tinfo.items() if v is None})
        tz, tzspec = self._field(cols, "tz")
        if tz is not None:
            mark(tz, {z for z in set(tz) if not (z.endswith(b"]") and z.count(b"]") == 1 and b"[" not in z)})
        for loc in plan.skipped:  # the line parser's %^ stops at the first character that follows the value
            col = cols.get(loc)
            if col is not None:
                skip = plan.glue[loc[2]] if loc[0] == "g" else plan.middle[loc[1]][loc[2]]
                stop = skip.stop.encode()
                mark(col, {v for v in set(col) if not _strip_ok(v, skip) or _stops_early(_strip(v, skip), stop)})
        # status
        s, sspec = self._field(cols, "s")
        if s is not None:
            ss = set(s)
            for v in ss.difference(self.status_ok):
                self.status_ok[v] = _strip_ok(v, sspec) and _strip(v, sspec).isdigit() and valid_status(
                    _strip(v, sspec))
            mark(s, {v for v in ss if not self.status_ok[v]})
        # a size beyond 2**64 - 1: the line parser counts it invalid (GoAccess would count 0 bytes silently)
        b, bspec = self._field(cols, "b")
        if b is not None and max(map(len, b)) > 19:
            mark(b, {v for v in set(b) if size_out_of_range(_strip(v, bspec))})
        # fields whose prefix/suffix literal must be present
        for name in ("b", "T", "P", "v", "X"):
            col, spec = self._field(cols, name)
            if col is not None and spec is not None and (spec.prefix or spec.suffix):
                mark(col, {v for v in set(col) if not _strip_ok(v, spec)})

        if bad:
            keep = [i not in bad for i in range(n)]
            cols = {k: list(compress(v, keep)) for k, v in cols.items()}
            lines = buf.split(NL)
            bad_lines = [lines[i] + NL for i in sorted(bad)]
            self._slow(b"".join(bad_lines), source, offset, fallback=True)
            h, _ = self._field(cols, "h")
            tk, _ = self._field(cols, "time")
            assert h is not None and tk is not None
            n = len(h)
            if n == 0:
                return
        self.p.lines += n
        self.p.fast_lines += n
        r, _ = self._field(cols, "r")
        assert r is not None
        s, sspec = self._field(cols, "s")
        b, bspec = self._field(cols, "b")
        ref, _ = self._field(cols, "R")
        ua, _ = self._field(cols, "u")
        rt, rtspec = self._field(cols, "T")
        urt, urtspec = self._field(cols, "P")
        h, hspec = self._field(cols, "h")
        xff, xspec = self._field(cols, "X")
        xff = _strip_col(xff, xspec)
        vh, vhspec = self._field(cols, "v")
        vh = _strip_col(vh, vhspec)
        assert h is not None
        # strip literal prefixes/suffixes (rare formats such as "rt=$request_time")
        h = _strip_col(h, hspec)
        s = _strip_col(s, sspec)
        b = _strip_col(b, bspec)
        rt = _strip_col(rt, rtspec)
        urt = _strip_col(urt, urtspec)
        size = 0
        if b is not None:
            joined = b"".join(b)
            size = (sum(map(int, b)) if joined.isdigit() and max(map(len, b)) <= 19
                    else sum(map(parse_size, b)))
        assert h is not None
        self._aggregate(h, tk, {k: v for k, v in tinfo.items() if v is not None}, r, s, size, ref, ua, rt, urt, b,
                        xff, vh)

    def forwarded(self, values: Iterable[bytes | None]) -> None:
        """Remember a few distinct passed-on client values (enough to see whether they vary)."""
        seen = self.p.forwarded
        if len(seen) < FORWARDED_KEEP:
            for v in set(values):
                if v and v != b"-":
                    seen.add(v)
                    if len(seen) >= FORWARDED_KEEP:
                        break

    def _aggregate(self, h: list[bytes], tk: list[Any], tinfo: dict[Any, TimeInfo], r: list[bytes],
                   s: list[Any] | None, size: int, ref: list[bytes] | None, ua: list[bytes] | None,
                   rt: list[Any] | None, urt: list[Any] | None, sizes: list[Any] | None = None,
                   xff: Sequence[bytes | None] | None = None, vh: list[bytes] | None = None) -> None:
        """``size``: the bytes of all lines; ``sizes``: each line's (``$body_bytes_sent`` as read, or a number)."""
        n = len(h)
        p = self.p
        if xff is not None:
            self.forwarded(xff)
            if self.resolver is not None:  # the client behind the trusted proxies, as nginx's realip finds it
                h = self.resolver.column(h, xff)
        p.valid += n
        p.bandwidth += size
        p.hosts.update(h)
        self.c_req.update(r)
        if ref is not None:
            self.c_ref.update(ref)
        if ua is not None:
            self.c_ua.update(ua)
        else:
            self.c_ua[b"-"] += n
        tc = Counter(tk)
        minutes = p.minutes
        for t, c in tc.items():
            minutes[tinfo[t]] += c
        if s is None:
            s = [None] * n
        p.status.update(s)
        ss = set(s)
        # unique visitors: (date, ip, agent) of requests whose status is not 4xx (GoAccess default)
        vinc = {x: x is None or x[:1] != b"4" for x in ss}
        dates = {tinfo[t][0] for t in tc}
        dcol: Iterable[int] = repeat(next(iter(dates)), n) if len(dates) == 1 else map(
            {t: tinfo[t][0] for t in tc}.__getitem__, tk)
        ucol: Iterable[bytes] = ua if ua is not None else repeat(b"-", n)
        trip = zip(dcol, h, ucol, strict=False)  # repeat() columns are endless
        if all(vinc.values()):
            self.visitors.update(trip)
        else:
            self.visitors.update(compress(trip, map(vinc.__getitem__, s)))
        # endpoints
        rs = set(r)
        new = rs.difference(self.ep_of)
        if new:
            if len(self.ep_of) + len(new) > CACHE_MAX:  # bounded memory: forget, recompute what is needed
                self.ep_of.clear()
                self.static_of.clear()
                self.page_of.clear()
                new = rs
            self._learn(new)
        ep = self.ep_of
        sp = list(map(self.static_of.__getitem__, r))
        if any(sp):  # static files (all statuses but 404) are counted here; the rest comes from GoAccess's keys
            p.static_paths.update(x for x, st in zip(sp, s, strict=True)
                                  if x is not None and (st is None or st[:3] != b"404"))
        if rt is not None or urt is not None:
            # a 101 (a WebSocket) is timed until the connection closes, minutes or hours: no response time
            upgraded = {x for x in ss if status_code(x) == 101}
            if upgraded:
                rt = _untimed(rt, s, upgraded)
                urt = _untimed(urt, s, upgraded)
        if rt is not None:
            self.has_rt = True
            self.c_lat.update(zip(map(ep.__getitem__, r), rt, strict=True))
        else:
            p.endpoint_hits.update(map(ep.__getitem__, r))
        if urt is not None:
            self.has_urt = True
            self.c_ulat.update(zip(map(ep.__getitem__, r), urt, strict=True))
        if vh is not None:  # per site: the same path of two sites is two paths
            p.vhosts.update(vh)
            self.c_vreq.update(zip(vh, r, strict=True))
            p.vhost_status.update(zip(vh, s, strict=True))
            if rt is not None:
                self.c_vlat.update(zip(vh, rt, strict=True))
        # upkeeper's own views read the status as a number, as the status distribution does ('+503' is
        # 503); GoAccess's not-found panel (and so its requested files) looks at the text ('404' only)
        code = {x: status_code(x) for x in ss}
        errs = {x for x, c in code.items() if c is not None and not 200 <= c < 300}
        if errs:
            em = {x: x in errs for x in ss}
            p.endpoint_errors.update(compress(zip(map(ep.__getitem__, r), s, strict=True),
                                              map(em.__getitem__, s)))
            nf = {x: x is not None and x[:3] == b"404" for x in ss}
            if any(nf.values()):
                self.c_req404.update(compress(r, map(nf.__getitem__, s)))
            burst = {x: code[x] == 404 for x in ss}
            if any(burst.values()):  # 404s per (client, minute), but for a page's missing images, styles, scripts
                rows = list(compress(range(n), map(burst.__getitem__, s)))
                assets = page_assets(list({r[i] for i in rows}))
                p.nf_bursts.update((h[i], tinfo[tk[i]]) for i in rows if r[i] not in assets)
        # failed logins: POSTs to a login path answered one of its failure statuses (rare lines, per row)
        logins = rs.intersection(self.login_of)
        if logins:
            login_of = self.login_of
            for i in compress(range(n), map(logins.__contains__, r)):
                path, fails = login_of[r[i]]
                answer = code[s[i]]
                if answer in fails:
                    d, hh, mm = tinfo[tk[i]]
                    p.auth_failures[(h[i], path, (d, hh, mm - mm % 10))] += 1
                elif answer is not None and 200 <= answer < 400:  # a login that succeeded
                    d, hh, mm = tinfo[tk[i]]
                    p.auth_successes[(h[i], (d, hh, mm - mm % 10))] += 1
        # attacks
        sus = rs.intersection(self.attack_of)
        if sus:
            samples = p.attack_samples
            for i in compress(range(n), map(sus.__contains__, r)):
                cat = self.attack_of[r[i]]
                if sizes is not None and 200 <= (code[s[i]] or 0) < 300:
                    self._probe_answer(r[i], sizes[i], cat)
                if cat in CONDITIONAL_PROBES:  # only some answers: the site does not run that software
                    if (counted := counted_category(cat, status_code(s[i]))) is None:
                        continue
                    cat = counted
                p.attacks[(cat, h[i], s[i])] += 1
                keep_first(samples.setdefault(cat, []), trim(r[i]), p.samples)  # as the line parser has it
        # sensitive files answered 2xx (rare lines, per row), and the body sizes of the front page's answers
        exposed = rs.intersection(self.sensitive_of)
        if exposed:
            for i in compress(range(n), map(exposed.__contains__, r)):
                if 200 <= (st2 := code[s[i]] or 0) < 300:
                    self._exposure(r[i], h[i], st2, sizes[i] if sizes is not None else 0, tinfo[tk[i]])
        pages = rs.intersection(self.page_of)
        if pages and sizes is not None:
            ok2 = {x: 200 <= (code[x] or 0) < 300 for x in ss}
            for x in compress(sizes, map(lambda ri, st: ri in pages and ok2[st], r, s)):
                self.p.page_sizes[_size(x)] += 1
        # the one body size of each GET route (a catch-all's page answers them all)
        ok2s = {x for x in ss if 200 <= (code[x] or 0) < 300}
        if sizes is not None and ok2s:
            for raw, size in set(compress(zip(r, sizes, strict=True), map(ok2s.__contains__, s))):
                self._route_size(ep[raw], _size(size))
        # scanner user agents
        if ua is not None:
            sc = self.scanner_agents(set(ua))
            if sc:
                for i in compress(range(n), map(sc.__contains__, ua)):
                    p.scanners[(sc[ua[i]], h[i])] += 1
        # exploits sent as the referer, and the clients that named each host in a referer
        if ref is not None:
            refs = set(ref)
            bad = self.referer_exploits(refs)
            if bad:
                for i in compress(range(n), map(bad.__contains__, ref)):
                    p.scanners[(bad[ref[i]], h[i])] += 1
            pending = self.pending_referers(refs)
            if pending:
                for x, ip in set(compress(zip(ref, h, strict=True), map(pending.__contains__, ref))):
                    self.referer_client(pending[x], ip)

    def scanner_agents(self, agents: Collection[bytes]) -> dict[bytes, str]:
        """The user agents among these (distinct) that name a scanner (:func:`~upkeeper.logs.classify.scanner_name`),
        with its name; each distinct agent is judged once (the cache starts over past CACHE_MAX: a crawler farm or
        a DDoS sends a million different agents, and the cache of all of them was as large as the log's agents,
        and read whole at every buffer)."""
        known = _judge_each(self.ua_scanner, agents, scanner_name)
        return {a: name for a in agents if (name := known[a])}

    def referer_exploits(self, referers: Iterable[bytes]) -> dict[bytes, str]:
        """The referers among these that carry an exploit (:func:`~upkeeper.logs.classify.referer_exploit`), with
        its name; each distinct referer is judged once (the cache starts over past CACHE_MAX)."""
        known = _judge_each(self.ref_exploit, referers, referer_exploit,
                            _referer_exploits if _referer_hints is not None else None)
        return {x: name for x in referers if (name := known[x])}

    def pending_referers(self, referers: Iterable[bytes]) -> dict[bytes, bytes]:
        """referer -> the host it names, for those of these referers whose host fewer than :data:`REFERER_CLIENTS`
        clients have named so far (each distinct referer is read once; the cache starts over past CACHE_MAX)."""
        known = _judge_each(self.ref_host, referers, _referer_host, _referer_hosts)
        clients = self.p.referer_clients
        return {x: host for x in referers if (host := known[x]) is not None
                and len(clients.get(host, ())) < REFERER_CLIENTS}

    def referer_client(self, host: bytes, ip: bytes) -> None:
        """Count ``ip`` (an IPv6 address by its /64) among the clients that named ``host`` in a referer."""
        ips = self.p.referer_clients.setdefault(host, set())
        if len(ips) < REFERER_CLIENTS:
            ips.add(_client_network(ip))

    def _probe_answer(self, raw: bytes, size: Any, category: str) -> None:
        """Count the body size of a 2xx answer to an attack request line (``size`` as read, or a number) of
        ``category`` (as learned)."""
        if (sz := _size(size)) <= 0 or request_method(raw) == b"HEAD":
            return
        self.p.attack_answers[(category, sz)] += 1
        if category.startswith(ABSOLUTE_URI):  # maybe the site's own page, asked for by its own name
            return
        if (path := self.probe_path_of.get(raw)) is None:
            path = self.probe_path_of[raw] = nginx_uri(request_path(raw)).lower()
        self.p.probe_sizes[(sz, path)] += 1

    def _route_size(self, endpoint: bytes, size: int) -> bool:
        """Keep the body size of a 2xx answer to ``endpoint`` in ``route_sizes`` (-1 once two differ); False when
        the endpoint's sizes are not (or no longer) worth keeping: not a GET route, or sizes that differ."""
        ok = self.route_ok.get(endpoint)
        if ok is None:
            path = endpoint[4:]
            ok = self.route_ok[endpoint] = (endpoint[:4] == b"GET " and path[:1] == b"/" and not self.is_static(path)
                                            and sensitive_file(path) is None)
        if not ok:
            return False
        if size <= 0:
            return True
        routes = self.p.route_sizes
        cur = routes.get(endpoint)
        if cur is None:
            routes[endpoint] = size
            return True
        if cur != size:
            routes[endpoint] = -1
            return False
        return True

    def _exposure(self, raw: bytes, ip: bytes, status: int, size: Any, when: TimeInfo) -> None:
        """Count a request for a sensitive file answered 2xx (``size`` as read, or a number)."""
        self.p.exposures[(self.sensitive_of[raw], ip, status, _size(size), when)] += 1

    def _learn(self, new: Iterable[bytes], candidates: Iterable[int] | None = None,
               sensitive: Iterable[int] | None = None, word_lines: WordFilter | None = None) -> None:
        """Endpoint, static path, attack category and sensitive file of new distinct request lines.

        ``candidates``: the indexes (into ``new``) that may be attacks, when the caller has
        already run the prefilter of :func:`~upkeeper.logs.classify.attack_categories`;
        ``sensitive``: those that may ask for a sensitive file, when it has run the one of
        :func:`~upkeeper.logs.classify.sensitive_requests`; ``word_lines``: see
        :func:`~upkeeper.logs.classify.endpoints_and_paths`.
        """
        lst = list(new)
        self._learn_requests(lst, word_lines)
        self._learn_security(lst, candidates, sensitive)

    def _learn_requests(self, lst: list[bytes], word_lines: WordFilter | None = None) -> None:
        """Endpoint, static path, login path and front page of new distinct request lines (the reference for
        :meth:`~upkeeper.logs.arrowscan.ArrowScanner._learn_requests`, which does most lines with RE2)."""
        intern = self.ep_intern
        eps, _paths = endpoints_and_paths(lst, word_lines)
        static = self.is_static
        for raw, e, (url, _m, _p) in zip(lst, eps, parse_requests(lst), strict=True):
            self.ep_of[raw] = intern.setdefault(e, e)
            self.static_of[raw] = url.split(b"?", 1)[0] if static(url) else None
            # (request_method strips blanks: a line beginning with one may be a POST too)
            if (raw[:4].upper() == b"POST" or raw[:1].isspace()) and (login := self.logins.of_request(raw)):
                self.login_of[raw] = login
            if e[:4] == b"GET " and e[4:] in FRONT_PAGES:
                self.page_of.add(raw)

    def _learn_security(self, lst: list[bytes], candidates: Iterable[int] | None = None,
                        sensitive: Iterable[int] | None = None) -> None:
        """Sensitive file and attack category of new distinct request lines (see :meth:`_learn`).  A request for a
        sensitive file is a scanner probe whatever the answer, when no attack pattern says more."""
        files = sensitive_requests(lst, sensitive)
        for i, uri in files.items():
            if request_method(lst[i]) != b"HEAD":  # no body: nothing handed out (and $bytes_sent counts headers)
                self.sensitive_of[lst[i]] = uri
        if candidates is None:
            found = attack_categories(lst)
        else:
            found = {i: cat for i in candidates if (cat := attack_category(lst[i]))}
        for i in files:
            found.setdefault(i, "scanner_probe")
        if self.public is not None:  # the site's own paths: no probe there (payloads still count)
            for i in [i for i, cat in found.items() if cat in PROBE_CATEGORIES]:
                if self.public.fullmatch(files.get(i) or nginx_uri(request_path(lst[i])).lower()):
                    del found[i]
        if self.free_text is not None:  # typed text in a search box's query string: counted apart
            for i, cat in found.items():
                if cat in FREE_TEXT_CATEGORIES and b"?" in lst[i] and self.free_text.fullmatch(
                        nginx_uri(path := request_path(lst[i])).lower()):
                    rest = attack_category(_QUERY_PART.sub(b"", lst[i], count=1))
                    if not rest:
                        found[i] = cat + FREE_TEXT
                    elif (host := absolute_host(rest)) is not None and _HTTP_TARGET.match(path):
                        # an absolute request line (RFC 9112 3.2.2: nginx takes it, and logs it as sent) for the
                        # path: typed text if it names the site's own host, which the summary tells (own_hosts)
                        found[i] = cat + FREE_TEXT_AT + host
        for i, cat in found.items():
            self.attack_of[lst[i]] = cat

    # -- the line-by-line path -----------------------------------------------------------------

    def _slow(self, buf: bytes, source: str, offset: int, fallback: bool = False) -> None:
        if self.collapsed:  # the lines as they were written (the collapse's bytes are of the same length)
            buf = buf.replace(LIST_BLANK, b" ")
        lines = buf.split(NL)
        last = lines.pop()  # b"" when buf ends with a newline, else a final line without one
        self._slow_lines(lines, last, source, offset, fallback, restored=True)

    def _slow_lines(self, lines: list[bytes], last: bytes, source: str, offset: int, fallback: bool = False,
                    restored: bool = False) -> None:
        """The line parser's work on ``lines`` (each without its newline) and ``last`` (a final line without one, or
        b""), from ``offset`` (``fallback``: lines the fast paths handed over, whose samples get no offset;
        ``restored``: the collapsed lists' blanks given back already).

        An unparsable line cost the parser 5-9 µs (a long one, milliseconds), an empty one ~0.2 µs: a log in another
        format was read at 30-40 MB/s, one of empty lines at 6 MB/s.  Where the C extension is built
        (:attr:`faults`), it first tells apart the lines that are none (empty, ``#``) and those whose fault is sure,
        with their LineError kinds, in one pass: they are counted at once, and only those that can become samples
        are parsed again, for their message.  The rest goes through the parser as before.  Every figure is the
        parser's: the counts, the reasons in the order they were first seen (the report's ``most_common`` breaks
        ties by it), the samples and their offsets."""
        if self.collapsed and not restored:
            lines = [x.replace(LIST_BLANK, b" ") for x in lines]
            last = last.replace(LIST_BLANK, b" ")
        p = self.p
        parse = self.parser.parse
        rows: list[Any] = []
        n = len(lines)
        todo: Iterable[int] = range(n)
        codes = self.faults(lines) if self.faults is not None and n else None
        starts = _Starts(lines, offset) if not fallback else None  # (each line's offset, for its sample)
        first: list[tuple[int, str]] = []  # (line index, kind) of each reason not seen before this call
        counted: dict[str, int] = {}  # the reasons of the faults line_faults told
        failed: list[tuple[int, str, str]] = []  # (line index, message, kind) of the lines the parser failed
        if codes is not None:
            told, pairs = codes
            skipped = told.count(0)
            p.ignored += skipped
            n_parser = told.count(1)
            todo = compress(range(n), told.translate(_TO_PARSER)) if n_parser else ()
            n_fail = n - skipped - n_parser
            if n_fail:
                p.lines += n_fail
                p.invalid += n_fail
                counted = self._count_faults(lines, told, pairs, source, starts, first)
        for k in todo:
            line = lines[k]
            if not line or line[:1] == b"#":
                p.ignored += 1
                continue
            p.lines += 1
            try:
                rows.append(parse(line + NL))
            except LineError as exc:
                failed.append((k, str(exc), exc.kind))
        if last:
            if last[:1] == b"#":
                p.ignored += 1
            else:
                p.lines += 1
                try:
                    rows.append(parse(last))
                except LineError as exc:
                    failed.append((n, str(exc), exc.kind))
        reasons = p.invalid_reasons
        if failed:
            new = {kind: k for k, _m, kind in reversed(failed) if kind not in reasons}  # (each at its first line)
            first += [(k, kind) for kind, k in new.items()]
        for _k, kind in sorted(first):  # the new reasons in the order of their first lines
            if kind not in reasons:
                reasons[kind] = 0
        if counted:
            reasons.update(counted)
        for k, message, kind in failed:
            self._invalid(lines[k] if k < n else last, message, kind, source, None if starts is None else starts[k])
        if not rows:
            return
        h = [x.host for x in rows]
        tk = [(x.date, x.time) for x in rows]
        tinfo: dict[Any, TimeInfo] = {}
        for key in set(tk):
            d, t = key
            tinfo[key] = (d, t[0], t[1]) if t is not None else (d, 0, 0)
        r = [x.request for x in rows]
        s = [x.status for x in rows]
        sizes = [x.size for x in rows]
        ref = [x.referer for x in rows]
        ua = [x.agent for x in rows]
        rt = [x.rt for x in rows] if any(x.rt is not None for x in rows) else None
        urt = [x.urt for x in rows] if any(x.urt is not None for x in rows) else None
        xff = [x.xff for x in rows] if self.has_passed else None
        vh = [x.vhost or b"-" for x in rows] if self.has_vhost else None
        self._aggregate(h, tk, tinfo, r, s, sum(sizes), ref, ua, rt, urt, sizes, xff, vh)

    def _count_faults(self, lines: list[bytes], told: bytes, pairs: list[tuple[int, int]], source: str,
                      starts: _Starts | None, first: list[tuple[int, str]]) -> dict[str, int]:
        """The reasons of the unparsable lines :func:`upkeeper.logs._cut.line_faults` told apart (``told``, ``pairs``)
        and how many lines each (those not counted yet in ``first``, with the line where each was first seen); those
        lines that can become samples kept as :meth:`_invalid` keeps them, with the parser's message."""
        reasons = self.p.invalid_reasons
        counted: dict[str, int] = {}
        for j, (code, letter) in enumerate(pairs, start=2):
            kind = fault_kind(code, letter)
            mark = bytes((j,))
            if kind not in reasons:
                first.append((told.find(mark), kind))
            counted[kind] = counted.get(kind, 0) + told.count(mark)
        # the samples: the first ``samples`` distinct (source, line) (keep_first), so only the smallest of these lines
        # can be among them, each from its first place (its offset)
        keys, cap = self.p.invalid_keys, self.p.samples
        cands = heapq.nsmallest(cap, set(compress(lines, told.translate(_TO_FAULT))))
        if len(keys) >= cap:
            cands = [x for x in cands if (source, x) < keys[-1]]
        parse = self.parser.parse
        for k, line in sorted((lines.index(x), x) for x in cands):
            try:
                parse(line + NL)
            except LineError as exc:
                message = str(exc)
            else:  # (not reached: line_faults says a fault only where parse raises)
                message = fault_kind(*pairs[told[k] - 2])
            self._sample(line, message, source, None if starts is None else starts[k])
        return counted

    def _invalid(self, line: bytes, reason: str, kind: str, source: str, offset: int | None) -> None:
        p = self.p
        p.invalid += 1
        p.invalid_reasons[kind] += 1
        self._sample(line, reason, source, offset)

    def _sample(self, line: bytes, reason: str, source: str, offset: int | None) -> None:
        """Keep ``line`` (unparsable: ``reason``) as a sample if it is among the first (see :attr:`invalid_keys`)."""
        p = self.p
        keys = p.invalid_keys
        if keep_first(keys, (source, line), p.samples):  # the first in byte order: see samples.keep_first
            # the format's credential fields ($http_authorization, $http_cookie …) masked before the
            # line is cut and kept; redact() then masks what is left (tasks/logs/nginx.py)
            # (control characters escaped as nginx escapes them: NUL padding, a raw ESC of escape=none)
            sample = mask_line(line, self.sample_mask)[:500]
            p.invalid_samples.insert(keys.index((source, line)), {
                "source": source, "offset": offset, "reason": reason,
                "line": printable(sample.decode("utf-8", errors="replace"))[:500]})
            del p.invalid_samples[p.samples:]

    # -- output --------------------------------------------------------------------------------

    def _request_keys(self, raws: list[bytes], hits: list[int],
                      keys_of: Callable[[list[bytes]], tuple[list[bytes | None], list[bool | None]]]
                      ) -> tuple[list[bytes], list[int]]:
        """Count the request lines ``raws`` (with their ``hits``, the 404s taken out already: see
        :meth:`_fold_requests`) whose GoAccess key ``keys_of`` finds (see
        :meth:`~upkeeper.logs.arrowscan.ArrowScanner.request_keys`) as :meth:`partial` does; return the others.

        Tens of thousands of lines a fold, hence no step in Python per line: the columns are picked with
        ``compress``, and the keys' hits added as one dict (``add_counts``) when no two lines share a key (two
        lines that differ only in how their URL is encoded do: then one by one)."""
        p = self.p
        ga = p.ga_requests
        keys, static = keys_of(raws)
        rest_raws: list[bytes] = []
        rest_hits: list[int] = []
        if None in keys:
            unkeyed = list(map(is_, keys, repeat(None)))
            rest_raws = list(compress(raws, unkeyed))
            rest_hits = list(compress(hits, unkeyed))
        if True in static:
            p.ga_static_hits += sum(compress(hits, map(is_, static, repeat(True))))
        if rest_raws or True in static:
            keep = list(map(is_, static, repeat(False)))  # a key, not a static file
            keys = list(compress(keys, keep))
            hits = list(compress(hits, keep))
        counted = cast("list[bytes]", keys)  # (those without a key are left out: their static is None)
        del keys
        by_key = dict(zip(counted, hits, strict=True))
        if len(by_key) == len(counted):
            if ga:
                _add_counts(ga, by_key)
            else:  # (the first batch: the dict's table copied whole)
                dict.update(ga, by_key)
        else:
            get = ga.get
            for k, c in zip(counted, hits, strict=True):
                ga[k] = get(k, 0) + c
        return rest_raws, rest_hits

    def _fold_requests(self, keys_of: Callable[[list[bytes]], tuple[list[bytes | None], list[bool | None]]] | None
                       ) -> None:
        """Turn the raw request lines counted so far into the report's keys, and empty their tables: GoAccess's
        requested files (decoded URL, method, protocol; minus 404s and static files), the 404 paths and the
        vhosts' paths.  Past :data:`REQUESTS_KEPT` requested files, the least seen are left out (see there)."""
        p = self.p
        ga = p.ga_requests
        static = self.is_static
        c404 = self.c_req404
        nf_raws = list(c404)
        for raw, (url, _m, _p) in zip(nf_raws, parse_requests(nf_raws), strict=True):
            p.not_found[url.split(b"?", 1)[0]] += c404[raw]
        c_req = self.c_req
        for raw, c in c404.items():  # the 404s are not requested files: taken out of the lines' hits at once
            left = c_req.get(raw, 0) - c
            if left > 0:
                c_req[raw] = left
            else:
                c_req.pop(raw, None)
        c404.clear()
        # two columns (8 bytes a line each; the table itself is freed at once), taken from the end in batches: the
        # raw request lines are freed as their keys are built (no list of a tuple per distinct line, ~24 MB for
        # 340k of them)
        raws, counts = list(c_req), list(c_req.values())
        c_req.clear()
        step = 50_000
        while raws:
            batch, hits = raws[-step:], counts[-step:]
            del raws[-step:], counts[-step:]
            if keys_of is not None:  # the common shape's keys with pyarrow kernels; the rest as below
                batch, hits = self._request_keys(batch, hits, keys_of)
            for c, (url, meth, proto) in zip(hits, parse_requests(batch), strict=True):
                if static(url):
                    p.ga_static_hits += c
                    continue
                ga[url + b"\0" + (meth or b"") + b"\0" + (proto or b"")] += c
            del batch, hits
        vreq = list(self.c_vreq.items())
        self.c_vreq.clear()
        for ((host, _raw), c), (url, _m, _p) in zip(vreq, parse_requests([raw for (_h, raw), _c in vreq]),
                                                    strict=True):
            p.vhost_paths[(host, url.split(b"?", 1)[0])] += c
        del vreq
        if len(ga) > REQUESTS_KEPT:
            prune_requests(p, REQUESTS_KEPT // 2)

    def _fold_if_many(self) -> None:
        """Fold the raw request lines (:meth:`_fold_requests`) in the middle of a scan (:data:`REQUESTS_FOLD`)."""
        arrow = self.arrow
        self._fold_requests(arrow.request_keys if arrow is not None and arrow.static_rx is not None else None)

    def partial(self) -> AccessPartial:
        """Reduce raw-keyed counters to report keys (done in the worker, in parallel)."""
        p = self.p
        # the caches are not needed any more: free them before the report keys are built (and drop
        # the pyarrow scanner, which refers back to this accumulator: no cycle keeps the state alive)
        keys_of = self.arrow.request_keys if self.arrow is not None and self.arrow.static_rx is not None else None
        if self.arrow is not None:  # (keys_of keeps the scanner: only its kernels)
            self.arrow.release()
        self.arrow = None
        for cache in (self.ep_of, self.static_of, self.ep_intern, self.login_of, self.ip_ok, self.status_ok,
                      self.ref_exploit, self.ref_host, self.ua_scanner, self.attack_of, self.sensitive_of,
                      self.probe_path_of, self.route_ok, self.page_of):
            cache.clear()
        self._fold_requests(keys_of)
        vms: dict[bytes, float | None] = {}
        for (host, tok), c in self.c_vlat.items():
            if tok not in vms:
                v = parse_seconds(tok)
                vms[tok] = round(v * 1000.0, 3) if v is not None else None
            if (ms := vms[tok]) is not None:
                p.vhost_latency[(host, ms)] += c
        self.c_vlat.clear()
        norm_ua: dict[bytes, bytes] = {}
        for a, c in self.c_ua.items():
            na = norm_ua[a] = normalize_agent(a)
            p.agents[na] += c
        refs = p.referers
        ref_get = refs.get  # (Counter's += calls its __missing__ in Python for each new key)
        for rf, c in self.c_ref.items():
            ref = normalize_referer(rf)
            refs[ref] = ref_get(ref, 0) + c
        # GoAccess 1.7 keys a visitor on the 32-bit djb2 hash of the agent, not the agent itself
        raw_visitors = self.visitors
        hash_of = _agent_hashes(set(map(itemgetter(2), raw_visitors)), norm_ua)
        del norm_ua
        while raw_visitors:  # popped, so the raw keys are freed as the report keys are built
            d, ip, a = raw_visitors.pop()
            p.visitors.add((d, ip, hash_of[a]))
        hits = p.endpoint_hits
        hits_get = hits.get
        for src, dst, parse in ((self.c_lat, p.latency, parse_seconds),
                                (self.c_ulat, p.upstream, parse_upstream_seconds)):
            ms_of: dict[Any, float | None] = {}
            timed = src is self.c_lat
            get = dst.get
            for (e, tok), c in src.items():
                if tok in ms_of:
                    ms = ms_of[tok]
                else:
                    v = parse(tok)
                    ms = ms_of[tok] = round(v * 1000.0, 3) if v is not None else None
                if timed:
                    hits[e] = hits_get(e, 0) + c
                if ms is not None:
                    pair = (e, ms)
                    dst[pair] = get(pair, 0) + c
        p.has_latency = self.has_rt
        p.has_upstream = self.has_urt
        if self.resolver is not None:
            p.client_outcomes = Counter(self.resolver.outcomes)
            p.client_examples = {k: list(v) for k, v in self.resolver.examples.items()}
        return p


class _Starts:
    """The offset of each of ``lines`` (each without its newline) from ``offset``: made when the first is asked."""

    def __init__(self, lines: list[bytes], offset: int) -> None:
        self.lines = lines
        self.offset = offset
        self.at: list[int] | None = None

    def __getitem__(self, k: int) -> int:
        if self.at is None:
            self.at = list(accumulate(map(len, self.lines), initial=0))
        return self.offset + self.at[k] + k


#: from this many distinct agents on, their djb2 hashes are computed with pyarrow kernels
#: (:func:`upkeeper.logs.arrowscan.djb2_many`: ~6x faster than the loop over each byte in Python)
DJB2_MANY = 2000


def _agent_hashes(agents: Collection[bytes], norm_ua: dict[bytes, bytes]) -> dict[bytes, int]:
    """raw agent -> GoAccess 1.7's djb2 of the agent as it normalizes it (``norm_ua``: those normalized so far)."""
    raws = list(agents)
    normal = []
    for a in raws:
        known = norm_ua.get(a)
        if known is None:
            known = norm_ua[a] = normalize_agent(a)
        normal.append(known)
    hashes: list[int] | None = None
    if len(normal) >= DJB2_MANY:
        try:
            from upkeeper.logs.arrowscan import djb2_many

            hashes = djb2_many(normal)
        except ImportError:  # no pyarrow: the loop
            pass
    if hashes is None:
        hashes = [djb2(x) for x in normal]
    return dict(zip(raws, hashes, strict=True))


# ---------------------------------------------------------------------------------------------
# helpers for token prefixes/suffixes and times
# ---------------------------------------------------------------------------------------------


def _untimed(col: list[Any] | None, statuses: list[Any], upgraded: set[Any]) -> list[Any] | None:
    """``col`` (request or upstream times) with ``-`` (no time) for the rows answered with a status in ``upgraded``."""
    if col is None:
        return None
    return [b"-" if st in upgraded else t for t, st in zip(col, statuses, strict=True)]


def _blanks_ok(pieces: list[bytes], blanks: int, n: int) -> bool:
    """Whether the first ``n`` of ``pieces`` (one per line) each hold ``blanks`` blanks."""
    counts = list(map(bytes.count, pieces[:n], repeat(b" ", n)))
    return counts.count(blanks) == n


def _line_blanks_ok(line: bytes, plan: SplitPlan) -> bool:
    """Whether the unquoted parts of ``line`` (of the format's quote count) have the format's numbers of blanks."""
    parts = line.split(b'"')
    glue = parts[0].count(b" ") + (parts[-1].count(b" ") if plan.quotes else 0)
    if glue != plan.glue_blanks:
        return False
    return all(parts[2 * j + 2].count(b" ") == k for j, k in enumerate(plan.middle_blanks))


def _stops_early(v: bytes, stop: bytes) -> bool:
    """Whether a skipped value holds a bracket (the combined format's ``%h %^[`` skips up to one) or the character
    the line parser's ``%^`` stops at."""
    return b"[" in v or b"]" in v or stop in v


def _has_list(line: bytes, marks: tuple[bytes, ...]) -> bool:
    """Does the unquoted text of ``line`` hold a list separator (", " of "0.800, 0.100")?"""
    if not any(mark in line for mark in marks):
        return False
    unquoted = b"\"".join(line.split(b'"')[0::2])
    return any(mark in unquoted for mark in marks)


def _size(v: Any) -> int:
    """A body size as a column holds it (the token, or a number already)."""
    return v if isinstance(v, int) else parse_size(v)


def _strip_ok(v: bytes, spec: TokenSpec | None) -> bool:
    if spec is None or not (spec.prefix or spec.suffix):
        return True
    pre, suf = spec.prefix.encode(), spec.suffix.encode()  # nginx writes the format's literals in UTF-8
    return v.startswith(pre) and v.endswith(suf) and len(v) >= len(pre) + len(suf)


def _strip(v: bytes, spec: TokenSpec | None) -> bytes:
    if spec is None or not (spec.prefix or spec.suffix):
        return v
    return v[len(spec.prefix.encode()):len(v) - len(spec.suffix.encode())]


def _strip_col(col: list[bytes] | None, spec: TokenSpec | None) -> list[bytes] | None:
    if col is None or spec is None or not (spec.prefix or spec.suffix):
        return col
    return list(map(itemgetter(slice(len(spec.prefix.encode()), -len(spec.suffix.encode()) or None)), col))


#: glibc strptime %S accepts 0-61, one or two digits; the fixed-width shape has two
_SECONDS = frozenset(f"{i:02d}".encode() for i in range(62))


class TimeTokens:
    """Parse time tokens (``[01/Mar/2024:10:00:00`` or ISO 8601) to (YYYYMMDD, hour, minute).

    The common fixed-width shape is sliced and looked up in two bounded caches (dates seen,
    and the at most 86 400 distinct ``HH:MM:SS``); anything else takes the strptime emulation.
    """

    def __init__(self, spec: TokenSpec, time_var: str) -> None:
        self.spec = spec
        self.msec = time_var == "msec"  # 1709287200.123, read by parse_epoch
        self.epochs: dict[bytes, TimeInfo | None] = {}
        self.iso = time_var == "time_iso8601"
        self.pre = spec.prefix.encode()
        self.suf = spec.suffix.encode()
        p = len(self.pre)
        if self.iso:  # 2024-03-01T10:00:00+00:00 (or -05:00: the offset is checked, not applied)
            self.width = p + 25 + len(self.suf)
            self.dsl, self.tsl = slice(p, p + 10), slice(p + 11, p + 19)
            self.msl, self.ssl = slice(0, p + 16), slice(p + 17, p + 19)
            self.marks = tuple((p + i, ord(c)) for i, c in ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":")))
            self.zsl = slice(p + 19, p + 25)
        else:  # 01/Mar/2024:10:00:00
            self.width = p + 20 + len(self.suf)
            self.dsl, self.tsl = slice(p, p + 11), slice(p + 12, p + 20)
            self.msl, self.ssl = slice(0, p + 17), slice(p + 18, p + 20)
            self.marks = tuple((p + i, ord(c)) for i, c in ((2, "/"), (6, "/"), (11, ":"), (14, ":"), (17, ":")))
        self.dates: dict[bytes, int | None] = {}
        self.times: dict[bytes, tuple[int, int] | None] = {}
        self.offsets: dict[bytes, bool] = {}

    def _offsets_ok(self, offsets: Iterable[bytes]) -> bool:
        """Are these offsets (the fixed-width shape's last six bytes) all valid? True for $time_local."""
        if not self.iso:
            return True
        ok = self.offsets
        for z in offsets:
            v = ok.get(z)
            if v is None:
                v = ok[z] = valid_offset(z)
            if not v:
                return False
        return True

    def regular(self, lst: list[bytes]) -> bool:
        """Have all these tokens the fixed-width shape (width, separators, prefix, suffix, offset; the seconds
        aside)?  Then a token reads as its minute (:meth:`_minute`) when its seconds are in :data:`_SECONDS`,
        and is invalid otherwise (``__call__``)."""
        return bool(lst and set(map(len, lst)) == {self.width}
                    and all(set(map(itemgetter(m), lst)) == {c} for m, c in self.marks) and (not self.pre or set(
                        map(itemgetter(slice(0, len(self.pre))), lst)) == {self.pre})
                    and (not self.suf or set(map(itemgetter(slice(self.width - len(self.suf), None)), lst))
                         == {self.suf})
                    and (not self.iso or self._offsets_ok(set(map(itemgetter(self.zsl), lst)))))

    def many(self, toks: set[bytes]) -> dict[bytes, TimeInfo | None]:
        """Parse distinct tokens; the common shape is handled with C-level slicing and lookups."""
        lst = list(toks)
        if self.msec:
            return {t: self._msec(t) for t in lst}
        if self.regular(lst) and set(map(itemgetter(self.ssl), lst)) <= _SECONDS:
            minute = list(map(itemgetter(self.msl), lst))
            info = {k: self._minute(k) for k in set(minute)}
            return dict(zip(lst, map(info.__getitem__, minute), strict=True))
        return {t: self(t) for t in lst}

    def _minute(self, k: bytes) -> TimeInfo | None:
        p = len(self.pre)
        if self.iso:  # 2024-03-01T10:00
            ds, hh, mm = k[p:p + 10], k[p + 11:p + 13], k[p + 14:p + 16]
        else:  # 01/Mar/2024:10:00
            ds, hh, mm = k[p:p + 11], k[p + 12:p + 14], k[p + 15:p + 17]
        d = self.dates.get(ds, -1)
        if d == -1:
            d = self.dates[ds] = parse_date(ds, "%Y-%m-%d" if self.iso else "%d/%b/%Y")
        tm = parse_time(hh + b":" + mm + b":00")
        if d is None or tm is None:
            return None
        return (d, tm[0], tm[1])

    def _msec(self, t: bytes) -> TimeInfo | None:
        """``$msec``: the seconds before the dot as GoAccess's ``%x.%^`` reads them; a token of another
        shape is left to the line parser (None)."""
        if not _strip_ok(t, self.spec):
            return None
        secs, dot, frac = _strip(t, self.spec).partition(b".")
        if not dot or (frac and not frac.isdigit()):
            return None
        info = self.epochs.get(secs, (0, 0, -1))
        if info == (0, 0, -1):
            dt = parse_epoch(secs)
            info = self.epochs[secs] = (dt[0], dt[1][0], dt[1][1]) if dt is not None else None
            if len(self.epochs) > 200_000:  # bounded: a log has one distinct second per second
                self.epochs.clear()
        return info

    def __call__(self, t: bytes) -> TimeInfo | None:
        if self.msec:
            return self._msec(t)
        if (len(t) == self.width and all(t[m] == c for m, c in self.marks) and t.startswith(self.pre)
                and t.endswith(self.suf) and (not self.iso or self._offsets_ok((t[self.zsl],)))):
            ds, ts = t[self.dsl], t[self.tsl]
            d = self.dates.get(ds, -1)
            if d == -1:
                d = self.dates[ds] = parse_date(ds, "%Y-%m-%d" if self.iso else "%d/%b/%Y")
            hm = self.times.get(ts, (-1, -1))
            if hm == (-1, -1):
                tm = parse_time(ts)
                hm = self.times[ts] = (tm[0], tm[1]) if tm else None
            if d is None or hm is None:
                return None
            return (d, hm[0], hm[1])
        return self.slow(t)

    def slow(self, t: bytes) -> TimeInfo | None:
        if not _strip_ok(t, self.spec):
            return None
        v = _strip(t, self.spec)
        if not self.iso:
            # GoAccess %d up to the first ':' then %t up to the space
            d, sep, rest = v.partition(b":")
            if not sep:
                return None
            date = parse_date(d, "%d/%b/%Y")
        else:  # %d up to 'T', then %t: the time and its UTC offset (strptime %T%z)
            d, sep, rest = v.partition(b"T")
            if not sep:
                return None
            date = parse_date(d, "%Y-%m-%d")
        tm = parse_time(rest, "%T%z" if self.iso else "%T")
        if date is None or tm is None:
            return None
        return (date, tm[0], tm[1])


# ---------------------------------------------------------------------------------------------
# merging and the report
# ---------------------------------------------------------------------------------------------


def merge(parts: list[AccessPartial]) -> AccessPartial:
    """Add partial aggregates (from several processes or files)."""
    if not parts:
        return AccessPartial()
    add: Callable[[Any, Any], None]
    try:
        from upkeeper.logs._cut import add_counts as add  # Counter.update's loop in C
    except ImportError:  # built without a C compiler
        add = Counter.update
    out = parts[0]
    for p in parts[1:]:
        for name in ("lines", "valid", "invalid", "ignored", "fast_lines", "bytes_read", "bandwidth",
                     "ga_static_hits", "ga_pruned_hits", "ga_pruned_error"):
            setattr(out, name, getattr(out, name) + getattr(p, name))
        for name in ("invalid_reasons", "status", "hosts", "agents", "referers", "static_paths", "not_found",
                     "ga_requests", "minutes", "latency", "upstream", "endpoint_hits", "endpoint_errors",
                     "nf_bursts", "auth_failures", "auth_successes", "attacks", "scanners", "exposures", "page_sizes", "probe_sizes", "attack_answers", "vhosts", "ga_pruned_paths",
                     "vhost_paths", "vhost_status", "vhost_latency", "client_outcomes"):
            add(getattr(out, name), getattr(p, name))
        for host, ips in p.referer_clients.items():
            have = out.referer_clients.setdefault(host, set())
            have.update(sorted(ips - have)[:max(0, REFERER_CLIENTS - len(have))])
        routes = out.route_sizes
        for e, sz in p.route_sizes.items():
            cur = routes.get(e)
            routes[e] = sz if cur is None or cur == sz else -1
        for kind, lst in p.client_examples.items():
            out.client_examples[kind] = merge_first(out.client_examples.get(kind, []), lst, EXAMPLES_KEPT)
        out.visitors |= p.visitors
        out.samples = cap = max(out.samples, p.samples)
        kept = dict(zip(out.invalid_keys, out.invalid_samples, strict=True))
        for k, sample in zip(p.invalid_keys, p.invalid_samples, strict=True):
            kept.setdefault(k, sample)
        out.invalid_keys = sorted(kept)[:cap]
        out.invalid_samples = [kept[k] for k in out.invalid_keys]
        for cat, lst in p.attack_samples.items():
            out.attack_samples[cat] = merge_first(out.attack_samples.get(cat, []), lst, cap)
        out.has_latency |= p.has_latency
        out.has_upstream |= p.has_upstream
        out.forwarded.update(list(p.forwarded)[:max(0, FORWARDED_KEEP - len(out.forwarded))])
    return out


def _s(b: bytes | None) -> str:
    return "-" if b is None else b.decode("utf-8", errors="replace")


STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


_UPSTREAM_SEP = re.compile(rb"\s*[,:]\s*")


def parse_upstream_seconds(tok: bytes | None) -> float | None:
    """``$upstream_response_time`` in seconds: after retries or internal redirects nginx writes one time
    per upstream contacted ("0.010, 0.020" or "0.004 : 0.010"); the request waited for all of them,
    so they add up.  ``-`` parts (no response from that one) count nothing; None when no part is a time."""
    if not tok or (b"," not in tok and b":" not in tok):
        return parse_seconds(tok)
    times = [v for v in map(parse_seconds, _UPSTREAM_SEP.split(tok.strip())) if v is not None]
    return sum(times) if times else None


def _minute_text(t: TimeInfo) -> str:
    d, hh, mm = t
    return f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d} {hh:02d}:{mm:02d}"


def _minute_number(t: TimeInfo) -> int | None:
    """Minutes since 0001-01-01 (None for an impossible date): adjacent minutes differ by one."""
    d, hh, mm = t
    day = _DAY_NUMBERS.get(d, -1)
    if day == -1:
        if len(_DAY_NUMBERS) >= 4096:  # (a log's dates are few; forged ones could be many)
            _DAY_NUMBERS.clear()
        try:
            day = date(d // 10000, d // 100 % 100, d % 100).toordinal() * 1440
        except ValueError:
            day = None
        _DAY_NUMBERS[d] = day
    return None if day is None else day + hh * 60 + mm


#: date as TimeInfo has it (YYYYMMDD) -> its first minute since 0001-01-01 (None: no such date), see _minute_number
_DAY_NUMBERS: dict[int, int | None] = {}


Periods = dict[int, tuple[int, int, TimeInfo]]  # period number -> (events, of which new, period start)


@dataclass
class SecurityTail:
    """The 404s per (client, minute) of the last two minutes, and the failed and successful logins per (client,
    path, 10-minute period) of the last hour (:data:`SLOW_LOGIN_PERIODS`), of the data an earlier run read.  A
    run adds them to its own (incremental mode), so that a 404 burst or a brute force split by the boundary
    between two runs is counted whole."""

    nf_bursts: Counter[tuple[bytes, TimeInfo]] = field(default_factory=Counter)
    auth_failures: Counter[tuple[bytes, bytes, TimeInfo]] = field(default_factory=Counter)
    auth_successes: Counter[tuple[bytes, TimeInfo]] = field(default_factory=Counter)

    def to_json(self) -> dict[str, list[list[Any]]]:
        return {"not_found": [[ip.decode("latin-1"), *t, c] for (ip, t), c in sorted(self.nf_bursts.items())],
                "logins": [[ip.decode("latin-1"), path.decode("latin-1"), *t, c]
                           for (ip, path, t), c in sorted(self.auth_failures.items())],
                "login_successes": [[ip.decode("latin-1"), *t, c]
                                    for (ip, t), c in sorted(self.auth_successes.items())]}

    @classmethod
    def from_json(cls, data: Any) -> SecurityTail:
        """Read what :meth:`to_json` wrote; anything else (no state yet, an older shape) is an empty tail."""
        out = cls()
        if not isinstance(data, dict):
            return out
        try:
            for ip, d, hh, mm, c in data.get("not_found", []):
                out.nf_bursts[(ip.encode("latin-1"), (int(d), int(hh), int(mm)))] += int(c)
            for ip, path, d, hh, mm, c in data.get("logins", []):
                out.auth_failures[(ip.encode("latin-1"), path.encode("latin-1"), (int(d), int(hh), int(mm)))] += int(c)
            for ip, d, hh, mm, c in data.get("login_successes", []):  # (a tail an older version kept has none)
                out.auth_successes[(ip.encode("latin-1"), (int(d), int(hh), int(mm)))] += int(c)
        except (TypeError, ValueError, AttributeError):
            return cls()
        return out


def security_tail(p: AccessPartial, earlier: SecurityTail | None = None, *,
                  not_after: datetime | None = None) -> SecurityTail:
    """What the next run needs of this one's 404s and logins (see :class:`SecurityTail`): those of the last two
    minutes, and of the last six 10-minute periods, of the data (``earlier`` included).  Log
    times after ``not_after`` (a wrong clock, forged lines) do not count as the end of the data: a line
    dated 2099 would otherwise drop the whole tail."""
    earlier = earlier or SecurityTail()
    nf = p.nf_bursts + earlier.nf_bursts
    auth = p.auth_failures + earlier.auth_failures
    ok = p.auth_successes + earlier.auth_successes
    limit = None if not_after is None else _minute_number(
        (not_after.year * 10000 + not_after.month * 100 + not_after.day, not_after.hour, not_after.minute))
    times = [n for n in map(_minute_number, [*p.minutes, *(t for _ip, t in nf), *(t for _i, _p, t in auth)])
             if n is not None and (limit is None or n <= limit)]
    if not times:
        return SecurityTail()
    last = max(times)
    first = 10 * (SLOW_LOGIN_PERIODS - 1)  # the logins of the last hour: a slow brute force's window
    return SecurityTail(
        Counter({k: c for k, c in nf.items() if last - 1 <= (_minute_number(k[1]) or 0) <= last}),
        Counter({k: c for k, c in auth.items() if last - last % 10 - first <= (_minute_number(k[2]) or 0) <= last}),
        Counter({k: c for k, c in ok.items() if last - last % 10 - first <= (_minute_number(k[1]) or 0) <= last}))


def _periods(events: Iterable[tuple[bytes, TimeInfo, int, bool]]) -> dict[bytes, Periods]:
    """Per client: events per period (by :func:`_minute_number`), and how many of them are ``new``."""
    out: dict[bytes, Periods] = {}
    for ip, when, c, new in events:
        n = _minute_number(when)
        if n is not None:
            m = out.setdefault(ip, {})
            total, fresh, _w = m.get(n, (0, 0, when))
            m[n] = (total + c, fresh + (c if new else 0), when)
    return out


def _worst_pair(counts: Periods, step: int, periods: int = 2) -> tuple[int, TimeInfo] | None:
    """The most events in two (or ``periods``) consecutive periods (``step`` minutes apart) holding a new event,
    and where they begin (None: no new event).

    Periods are clock-aligned buckets; counting pairs means a burst is never split in two by a
    bucket boundary (25 probes at 10:00:50–10:01:10 count 25, not 13 + 12).  Pairs of events an earlier run
    read whole (carried over in a :class:`SecurityTail`) were judged by that run and are not judged again.
    """
    best: tuple[int, TimeInfo] | None = None
    for k in sorted(counts):
        when = counts[k][2]
        got = [counts.get(k + i * step, (0, 0, when)) for i in range(periods)]
        c = sum(x[0] for x in got)
        if any(x[1] for x in got) and (best is None or c > best[0]):
            best = (c, when)
    return best


#: a body size answered 2xx to this many different paths, each a sensitive file or a request flagged as an attack or
#: probe (``/wp-login.php`` on a site without WordPress, ``/phpmyadmin/``, ``/?id=1' or 1=1``), is a catch-all's page
#: (a soft 404, an SPA's index.html), not that many files
CATCH_ALL_PATHS = 3


def _loopback(ip: bytes) -> bool:
    try:
        return ipaddress.ip_address(ip.decode("latin-1").strip()).is_loopback
    except ValueError:
        return False


#: a body size that is the only size of every 2xx answer to this many different GET routes (endpoints that are neither
#: static nor sensitive files) is a catch-all's page: a single-page app's /about, /pricing, /login, /account … are
#: all its index.html, while the pages of a site that has them differ in size (and one page's size varies with its
#: content, its dynamic parts)
CATCH_ALL_ROUTES = 5


def shared_sizes(p: AccessPartial) -> set[int]:
    """The body sizes answered 2xx to :data:`CATCH_ALL_PATHS` or more different paths that are sensitive files or
    attack probes (``p.probe_sizes``), or that are the one size of :data:`CATCH_ALL_ROUTES` or more GET routes
    (``p.route_sizes``): a catch-all's page."""
    uris_of_size: dict[int, set[bytes]] = {}
    for (uri, _ip, _st, size, _t) in p.exposures:
        uris_of_size.setdefault(size, set()).add(uri)
    for (size, uri) in p.probe_sizes:
        uris_of_size.setdefault(size, set()).add(uri)
    out = {sz for sz, uris in uris_of_size.items() if sz > 0 and len(uris) >= CATCH_ALL_PATHS}
    routes = Counter(sz for sz in p.route_sizes.values() if sz > 0)
    return out | {sz for sz, c in routes.items() if c >= CATCH_ALL_ROUTES}


def catch_all_sizes(p: AccessPartial, page_sizes: Iterable[int] = ()) -> set[int]:
    """The body sizes of a catch-all's page: a 2xx answer to the front page (this run's, or ``page_sizes`` that
    earlier runs kept) and :func:`shared_sizes`."""
    return {sz for sz in p.page_sizes if sz > 0} | {int(sz) for sz in page_sizes} | shared_sizes(p)




def referred_hosts(p: AccessPartial) -> list[str]:
    """The hosts that the referers of :data:`REFERER_CLIENTS` or more different clients name (sorted)."""
    return sorted(h.decode("latin-1") for h, ips in p.referer_clients.items() if len(ips) >= REFERER_CLIENTS)


def own_hosts(p: AccessPartial, server_names: Iterable[str] = (), known_hosts: Iterable[str] = ()) -> Callable[[str], bool]:
    """Whether a host named in an absolute request line is one of the site's own: one of ``server_names`` (nginx's
    forms: ``example.com``, ``*.example.com``, ``.example.com`` for both, ``www.example.*``), or — when none is
    given — a host that the referers of :data:`REFERER_CLIENTS` or more different clients name (the site's own pages
    refer to each other, so its visitors' referers name its host, while an IP-echo or proxy-judge site a proxy probe
    asks for is nobody's referer; a prober that sends its target as its own referer is one client), or one of
    ``known_hosts`` (those :func:`referred_hosts` found in earlier runs' lines)."""
    names = [n.strip().lower().rstrip(".") for n in server_names if n.strip()]
    if names:
        alts = []
        for n in names:
            if n.startswith("."):
                alts.append(re.escape(n[1:]) + "|.*" + re.escape(n))
            else:
                alts.append(re.escape(n).replace(r"\*", ".*"))
        rx = re.compile("(?:" + "|".join(alts) + ")")
        return lambda host: rx.fullmatch(host.rstrip(".")) is not None
    referred = set(referred_hosts(p)) | set(known_hosts)
    return lambda host: host.rstrip(".") in referred


def resolved_category(category: str, own: Callable[[str], bool]) -> str | None:
    """An attack category as counted: an absolute request line for another host than the site's own is an
    open-proxy probe, one for the site's own host nothing."""
    host = absolute_host(category)
    if host is None:
        return category
    return None if own(host) else OPEN_PROXY


def exposure_summary(p: AccessPartial, *, page_sizes: Iterable[int] = (), public_paths: Iterable[str] = (),
                     catch_all: set[int] | None = None) -> dict[str, Any]:
    """Sensitive files answered 2xx with a body, per resolved path, minus what a catch-all answered: a body of
    the size of a 2xx answer to the front page (this run's, or ``page_sizes`` of earlier runs) or of one size for
    :data:`CATCH_ALL_PATHS` different paths that are sensitive files or attack probes (``probe_sizes``: paths a
    site does not have, which only a catch-all answers 2xx, all with its one page).  ``public_paths``: paths
    served on purpose."""
    public = path_matcher([p.lower() for p in public_paths])  # the uris are lower-cased (sensitive_requests)
    if catch_all is None:
        catch_all = catch_all_sizes(p, page_sizes)
    groups: dict[bytes, dict[str, Any]] = {}
    for (uri, ip, st, size, t), c in sorted(p.exposures.items()):
        kind = sensitive_file(uri)
        if size <= 0 or size in catch_all or kind is None or public.fullmatch(uri):
            continue
        if kind[0] in LOCAL_STATUS_FILES and _loopback(ip):
            continue
        g = groups.setdefault(uri, {"path": _s(uri), "file": kind[0], "secret": kind[1], "hits": 0,
                                    "ips": Counter(), "statuses": set(), "bytes": set(), "first": t})
        g["hits"] += c
        g["ips"][ip] += c
        g["statuses"].add(st)
        g["bytes"].add(size)
        g["first"] = min(g["first"], t, key=lambda x: _minute_number(x) or 0)
    out = []
    for g in sorted(groups.values(), key=lambda g: (not g["secret"], -g["hits"], g["path"])):
        ips = g.pop("ips")
        out.append({**g, "statuses": sorted(g["statuses"]), "bytes": sorted(g["bytes"])[:10],
                    "first": _minute_text(g["first"]), "client_count": len(ips),
                    "clients": [_s(ip) for ip, _c in top(ips, 10)]})
    return {"exposed": out, "catch_all_sizes": sorted(catch_all)[:20]}


#: a client with at least one successful login for this many failed ones in its worst 20 minutes is many people
#: behind one address, not a brute force (see security_summary)
SHARED_LOGIN_RATIO = 2
#: a client below the brute-force threshold in every 20 minutes is judged over this many 10-minute periods (an hour)
#: too, against this many times the threshold: a slow brute force or credential stuffing paced at one try every
#: two or three minutes (fail2ban's findtime is 10 minutes) makes 20-30 in an hour, never 10 in 20 minutes
SLOW_LOGIN_PERIODS = 6
SLOW_LOGIN_FACTOR = 2


#: failed logins of all clients together in 20 minutes, as a multiple of the brute-force threshold, that are credential
#: stuffing spread over many addresses (each under the threshold) when they come from DISTRIBUTED_CLIENTS clients or
#: more and outnumber the logins that succeeded DISTRIBUTED_RATIO to one: a site's own users mistype far less often
#: than they log in
DISTRIBUTED_FACTOR = 10
DISTRIBUTED_CLIENTS = 10
DISTRIBUTED_RATIO = 3


def distributed_logins(p: AccessPartial, earlier: SecurityTail, brute_force: int) -> dict[str, Any] | None:
    """The worst 20 minutes (two consecutive 10-minute periods holding a new failed login) of the failed logins of
    all clients together, when they are credential stuffing spread over many addresses (see
    :data:`DISTRIBUTED_FACTOR`), else None.  The login paths where every POST counts (XML-RPC's attempts, a
    pingback flood among them) are left out: there a failure cannot be told from a success."""
    fails: Counter[int] = Counter()
    fresh: Counter[int] = Counter()
    clients: dict[int, set[bytes]] = {}
    ok: Counter[int] = Counter()
    starts: dict[int, TimeInfo] = {}
    for counts, new in ((p.auth_failures, True), (earlier.auth_failures, False)):
        for (ip, path, w10), c in counts.items():
            if attempts_only(path.decode("latin-1")) or (n := _minute_number(w10)) is None:
                continue
            fails[n] += c
            fresh[n] += c if new else 0
            clients.setdefault(n, set()).add(ip)
            starts.setdefault(n, w10)
    for (_ip, w10), c in (p.auth_successes + earlier.auth_successes).items():
        if (n := _minute_number(w10)) is not None:
            ok[n] += c
    best: dict[str, Any] | None = None
    for k in sorted(fails):
        f, succeeded = fails[k] + fails[k + 10], ok[k] + ok[k + 10]
        who = clients[k] | clients.get(k + 10, set())
        if (fresh[k] or fresh[k + 10]) and f >= DISTRIBUTED_FACTOR * brute_force and len(who) >= DISTRIBUTED_CLIENTS \
                and f >= DISTRIBUTED_RATIO * succeeded and (best is None or f > best["failed"]):
            best = {"failed": f, "succeeded": succeeded, "clients": len(who), "from": _minute_text(starts[k])}
    return best


def security_summary(p: AccessPartial, *, not_found_burst: int = 20, brute_force: int = 10,
                     top_n: int = 10, earlier: SecurityTail | None = None, page_sizes: Iterable[int] = (),
                     public_paths: Iterable[str] = (), server_names: Iterable[str] = (),
                     known_hosts: Iterable[str] = ()) -> dict[str, Any]:
    """Attack patterns, scanner agents, 404 bursts per client, failed logins per client (with ``earlier``:
    the end of the previous run's data, so a burst across the boundary between runs is counted whole;
    the totals are this run's).  An attack's ``ok`` counts its 2xx answers but those with a catch-all's body
    size (``catch_all``: the site's one page, whatever the request); ``server_names``, ``known_hosts``: see
    :func:`own_hosts`."""
    earlier = earlier or SecurityTail()
    own = own_hosts(p, server_names, known_hosts)
    catch_all = catch_all_sizes(p, page_sizes)
    cats: dict[str, dict[str, Any]] = {}
    for (marked, ip, st), c in p.attacks.items():
        learned, free = free_text_category(marked, own)
        if (cat := resolved_category(learned, own)) is None:
            continue
        if (e := cats.get(cat)) is None:
            e = cats[cat] = {"category": cat, "hits": 0, "ips": Counter(), "ok": 0, "catch_all": 0, "free_text": 0}
        e["hits"] += c
        e["ips"][ip] += c
        if (sc := status_code(st)) is not None and 200 <= sc < 300:
            e["free_text" if free else "ok"] += c
    for (marked, size), c in p.attack_answers.items():
        learned, free = free_text_category(marked, own)
        if size in catch_all and (cat := resolved_category(learned, own)) in cats:
            cats[cat]["free_text" if free else "ok"] -= c
            cats[cat]["catch_all"] += c
    samples: dict[str, set[bytes]] = {}
    typed: dict[str, set[bytes]] = {}  # samples on free-text paths: shown after the others
    for marked, lst in p.attack_samples.items():
        learned, free = free_text_category(marked, own)
        if (cat := resolved_category(learned, own)) is not None:
            (typed if free else samples).setdefault(cat, set()).update(lst)
    attacks = []
    for cat, e in sorted(cats.items(), key=lambda kv: (-kv[1]["hits"], kv[0])):
        ips = e.pop("ips")
        attacks.append({**e, "clients": len(ips), "top_client": _s(top(ips, 1)[0][0]) if ips else "",
                        "top_clients": [_s(ip) for ip, _ in top(ips, 5)],
                        "samples": [_s(x) for x in [*sorted(samples.get(cat, ())),
                                                    *sorted(typed.get(cat, set()) - samples.get(cat, set()))][:5]]})
    scanners: dict[str, Counter[bytes]] = defaultdict(Counter)
    for (name, ip), c in p.scanners.items():
        scanners[name][ip] += c
    scan_list = [{"scanner": name, "hits": sum(ips.values()), "client_count": len(ips),
                  "clients": [_s(ip) for ip, _ in top(ips, 10)]}
                 for name, ips in sorted(scanners.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))]
    nf_by_ip = _periods([(ip, t, c, True) for (ip, t), c in p.nf_bursts.items()]
                        + [(ip, t, c, False) for (ip, t), c in earlier.nf_bursts.items()])
    bursts: list[dict[str, Any]] = []
    for ip, by_minute in nf_by_ip.items():
        if len(by_minute) == 1 and next(iter(by_minute.values()))[0] < not_found_burst:
            continue  # (most clients: a 404 or two in one minute, no burst)
        worst = _worst_pair(by_minute, 1)
        if worst is not None and worst[0] >= not_found_burst:
            bursts.append({"ip": _s(ip), "max_in_window": worst[0], "from": _minute_text(worst[1]),
                           "total": sum(f for _c, f, _w in by_minute.values())})
    bursts.sort(key=lambda x: (-int(x["max_in_window"]), str(x["ip"])))
    # brute force per client, over every login path it tried, in two consecutive 10-minute periods
    logins = _periods([(ip, w10, c, True) for (ip, _path, w10), c in p.auth_failures.items()]
                      + [(ip, w10, c, False) for (ip, _path, w10), c in earlier.auth_failures.items()])
    paths: dict[bytes, Counter[bytes]] = defaultdict(Counter)
    for (ip, path, _w10), c in (p.auth_failures + earlier.auth_failures).items():
        paths[ip][path] += c
    # the logins that succeeded from each client in its worst 20 minutes: a brute force or credential stuffing
    # succeeds for a few tries in a hundred at most, while many people behind one address (a NAT, an office, a
    # mobile carrier's CGNAT) log in far more often than they mistype their password
    succeeded: Counter[tuple[bytes, int]] = Counter()
    for (ip, w10), c in (p.auth_successes + earlier.auth_successes).items():
        if (n := _minute_number(w10)) is not None:
            succeeded[(ip, n)] += c
    brute: list[dict[str, Any]] = []
    for ip, by_window in logins.items():
        # 20 minutes (two periods), or, for a brute force or credential stuffing paced under that threshold, an hour
        worst, minutes = _worst_pair(by_window, 10), 20
        if worst is None or worst[0] < brute_force:
            worst, minutes = _worst_pair(by_window, 10, SLOW_LOGIN_PERIODS), 10 * SLOW_LOGIN_PERIODS
            if worst is None or worst[0] < brute_force * SLOW_LOGIN_FACTOR:
                continue
        start = _minute_number(worst[1]) or 0
        ok = sum(succeeded[(ip, start + 10 * i)] for i in range(minutes // 10))
        brute.append({"ip": _s(ip), "path": _s(paths[ip].most_common(1)[0][0]),
                      "paths": [_s(x) for x, _c in paths[ip].most_common(5)], "max_per_window": worst[0],
                      "window_minutes": minutes, "from": _minute_text(worst[1]),
                      "total": sum(f for _c, f, _w in by_window.values()),
                      "succeeded": ok, "shared": ok * SHARED_LOGIN_RATIO >= worst[0]})
    brute.sort(key=lambda x: (-int(x["max_per_window"]), str(x["ip"])))
    return {"attacks": attacks, "scanners": scan_list, "not_found_bursts": bursts[:top_n * 5],
            "brute_force": brute[:top_n * 5],
            "distributed_logins": distributed_logins(p, earlier, brute_force),
            "failed_logins": sum(p.auth_failures.values()),
            **exposure_summary(p, page_sizes=page_sizes, public_paths=public_paths, catch_all=catch_all)}


def summarize(p: AccessPartial, *, top_n: int = 10, failed_statuses: str = "5xx",
              min_endpoint_requests: int = 20, max_endpoints: int = 50, not_found_burst: int = 20,
              brute_force: int = 10, earlier: SecurityTail | None = None,
              log_format: str | None = None, page_sizes: Iterable[int] = (),
              public_paths: Iterable[str] = (), client_ip: str = "remote_addr",
              server_names: Iterable[str] = (), known_hosts: Iterable[str] = ()) -> dict[str, Any]:
    """The access report as plain JSON-able data (``earlier``, ``page_sizes``, ``public_paths``, ``server_names``,
    ``known_hosts``: see
    :func:`security_summary`; ``log_format``: the format read, which says whether latency is available even when
    no line was read; ``client_ip``: where the client addresses came from, see :class:`ScanOptions`)."""
    valid = p.valid
    status: Counter[str] = Counter()
    for raw, v in p.status.items():
        if raw is not None:  # GoAccess keys the number (strtol): "0404" and "+404" are 404
            status[str(int(raw)) if valid_status(raw) else _s(raw)] += v
    classes = Counter({c: 0 for c in STATUS_CLASSES})
    for code, v in status.items():
        if code[:1].isdigit():
            classes[f"{code[0]}xx"] += v
    def pct(x: float) -> float:
        return round(100.0 * x / valid, 4) if valid else 0.0

    failed_spec = parse_statuses(failed_statuses)
    failed = sum(v for k, v in status.items() if _status_in(k, failed_spec))
    by_hour: dict[tuple[int, int], int] = {}  # (a text made per hour, not per minute)
    hour_get = by_hour.get
    for (d, hh, _mm), c in p.minutes.items():
        key = (d, hh)
        by_hour[key] = hour_get(key, 0) + c
    hourly = {f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d} {hh:02d}:00": c for (d, hh), c in by_hour.items()}
    # a format without $http_user_agent: no request has an agent to tell a bot by (not "every request a bot")
    agents_logged = has_variable(log_format, "http_user_agent") if log_format else True
    # without $status no request failed or succeeded as far as the log tells (not "0 % failed": an objective met
    # by nothing measured), without $body_bytes_sent or $bytes_sent no byte was counted (not "0 B")
    status_logged = has_variable(log_format, "status") if log_format else True
    bytes_logged = (has_variable(log_format, "body_bytes_sent") or has_variable(log_format, "bytes_sent")
                    if log_format else True)
    bots = sum(c for a, c in p.agents.items() if is_bot(a)) if agents_logged else 0
    visitors_by_date: Counter[int] = Counter(map(itemgetter(0), p.visitors))
    lat_all: Counter[float] = Counter()
    per_ep: dict[bytes, Counter[float]] = defaultdict(Counter)  # (no Counter made per value and thrown away)
    lat_get = lat_all.get
    for (e, ms), c in p.latency.items():
        lat_all[ms] = lat_get(ms, 0) + c
        hist = per_ep[e]
        hist[ms] = hist.get(ms, 0) + c  # (Counter's += runs its __missing__ in Python for each new value)
    ups_all: Counter[float] = Counter()
    ups_get = ups_all.get
    for (_e, ms), c in p.upstream.items():
        ups_all[ms] = ups_get(ms, 0) + c
    ep_err: dict[bytes, Counter[str]] = defaultdict(Counter)
    for (e, st), c in p.endpoint_errors.items():
        sc = status_code(st)
        if sc is None:
            continue
        errs = ep_err[e]
        errs[f"{sc // 100}xx"] += c
        if _status_in(str(sc), failed_spec):
            errs["failed"] += c
    ep_stats: dict[bytes, dict[str, float]] = {}  # (each endpoint's percentiles once: listed and slowest)

    def stats_of(e: bytes) -> dict[str, float]:
        if (got := ep_stats.get(e)) is None:
            got = ep_stats[e] = percentiles(per_ep.get(e, Counter()).items())
        return got

    endpoints = []
    for e, hits in top(p.endpoint_hits, max_endpoints):
        stats = stats_of(e)
        errs = ep_err.get(e, Counter())
        endpoints.append({"endpoint": _s(e), "hits": hits, **{k: v for k, v in stats.items() if k != "count"},
                          "4xx": errs.get("4xx", 0), "5xx": errs.get("5xx", 0), "failed": errs.get("failed", 0),
                          "timed": int(stats.get("count", 0))})
    slow: list[dict[str, Any]] = []
    for e, hist in per_ep.items():
        if sum(hist.values()) < min_endpoint_requests:
            continue
        pst = stats_of(e)
        slow.append({"endpoint": _s(e), "hits": p.endpoint_hits.get(e, 0),
                     **{k: v for k, v in pst.items() if k != "count"}})
    slow.sort(key=lambda x: (-x.get("p95", 0.0), x["endpoint"]))
    # over every endpoint, not only the busiest ones listed above: a rarely used one may fail the most
    failing = [{"endpoint": _s(e), "hits": p.endpoint_hits.get(e, 0), "failed": c} for e, c in
               top(Counter({e: errs["failed"] for e, errs in ep_err.items() if errs["failed"]}), top_n)]
    minutes_sorted = sorted(p.minutes)
    first = last = None
    if minutes_sorted:
        (d0, h0, m0), (d1, h1, m1) = minutes_sorted[0], minutes_sorted[-1]
        first = f"{d0 // 10000:04d}-{d0 // 100 % 100:02d}-{d0 % 100:02d} {h0:02d}:{m0:02d}"
        last = f"{d1 // 10000:04d}-{d1 // 100 % 100:02d}-{d1 % 100:02d} {h1:02d}:{m1:02d}"
    lines = p.lines
    return {
        "lines": lines,
        "requests": valid,
        "invalid": p.invalid,
        "ignored": p.ignored,
        "unparsed_pct": round(100.0 * p.invalid / lines, 4) if lines else 0.0,
        "invalid_reasons": dict(p.invalid_reasons.most_common(10)),
        "invalid_samples": p.invalid_samples,
        "bytes_read": p.bytes_read,
        "fast_path_lines": p.fast_lines,
        "bandwidth": p.bandwidth & ULL_MAX if bytes_logged else None,  # GoAccess's uint64 total
        "bandwidth_available": bytes_logged,
        "first": first,
        "last": last,
        "visitors": len(p.visitors),
        "visitors_by_date": {f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}": c
                             for d, c in sorted(visitors_by_date.items())},
        "bots": ({"requests": bots, "humans": valid - bots, "bot_pct": pct(bots), "available": True}
                 if agents_logged else {"requests": None, "humans": None, "bot_pct": None, "available": False}),
        "status": dict(sorted(status.items())),
        "status_classes": dict(classes),
        "status_available": status_logged,
        "rate_4xx_pct": pct(classes["4xx"]) if status_logged else None,
        "rate_5xx_pct": pct(classes["5xx"]) if status_logged else None,
        "failed": failed if status_logged else None,
        "failed_pct": pct(failed) if status_logged else None,
        "hourly": dict(sorted(hourly.items())),
        "latency": {"overall": percentiles(lat_all.items()), "upstream": percentiles(ups_all.items()),
                    "available": has_variable(log_format, "request_time") if log_format else p.has_latency,
                    "untimed_upgrades": status.get("101", 0)},  # WebSockets: timed until closed, left out
        "endpoints": endpoints,
        "slowest_endpoints": slow[:top_n],
        "failing_endpoints": failing,
        "vhosts": vhost_summary(p, top_n=top_n, failed_spec=failed_spec, status_logged=status_logged),
        "top": {
            # two sites' "/" are two paths: with several hosts in the log, each path is a host's
            "paths": ([{"host": _s(h), "path": _s(k), "hits": v} for (h, k), v in top(p.vhost_paths, top_n)]
                      if len(p.vhosts) > 1 else [{"path": _s(k), "hits": v} for k, v in top_paths(p, top_n)]),
            "not_found": [{"path": _s(k), "hits": v} for k, v in top(p.not_found, top_n)],
            "hosts": [{"ip": _s(k), "hits": v} for k, v in top(p.hosts, top_n)],
            "agents": [{"agent": _s(k), "hits": v, "bot": is_bot(k)} for k, v in top(p.agents, top_n)],
            "referers": [{"referer": _s(k), "hits": v} for k, v in top(p.referers, top_n + 1)
                         if k != b"-"][:top_n],
        },
        "security": security_summary(p, not_found_burst=not_found_burst, brute_force=brute_force, top_n=top_n,
                                     earlier=earlier, page_sizes=page_sizes, public_paths=public_paths,
                                     server_names=server_names, known_hosts=known_hosts),
        "clients": clients_summary(p, client_ip=client_ip, forwarded=(
            client_variables(format_variables(log_format), client_ip)[1] if log_format else None),
            xff_logged=bool(p.forwarded) if log_format is None else None),
        "goaccess": {
            "total_requests": lines,
            "valid_requests": valid,
            "failed_requests": p.invalid,
            "unique_visitors": len(p.visitors),
            "bandwidth": p.bandwidth & ULL_MAX,
            "status_codes": dict(sorted(status.items())),
            "requests": [{"data": _s(u), "method": _s(m) if m else "---", "protocol": _s(pr) if pr else "---",
                          "hits": c} for (u, m, pr), c in ((k.split(b"\0"), c) for k, c in top(p.ga_requests, top_n))],
            # past REQUESTS_KEPT distinct keys: what the list left out, and what each count may miss at most
            **({"requests_pruned": {"hits": p.ga_pruned_hits, "max_error": p.ga_pruned_error}}
               if p.ga_pruned_hits else {}),
        },
    }


def vhost_summary(p: AccessPartial, *, top_n: int, failed_spec: str, status_logged: bool = True
                  ) -> list[dict[str, Any]]:
    """Per site (``$host``, ``$server_name`` or ``$http_host`` in the format), the busiest ``top_n``: requests,
    4xx, 5xx and failed counts, the failed rate (None each without ``$status`` in the format), latency percentiles
    and the top paths."""
    if not p.vhosts:
        return []
    status: dict[bytes, Counter[str]] = defaultdict(Counter)
    for (host, st), c in p.vhost_status.items():
        code = status_code(st)
        if code is None:
            continue
        counts = status[host]
        counts[f"{code // 100}xx"] += c
        if _status_in(str(code), failed_spec):
            counts["failed"] += c
    lat: dict[bytes, Counter[float]] = defaultdict(Counter)
    for (host, ms), c in p.vhost_latency.items():
        lat[host][ms] += c
    paths: dict[bytes, Counter[bytes]] = defaultdict(Counter)
    for (host, path), c in p.vhost_paths.items():
        paths[host][path] += c
    out = []
    for host, n in top(p.vhosts, top_n):
        counts = status.get(host, Counter())
        pst = percentiles(lat.get(host, Counter()).items())
        out.append({"host": _s(host), "requests": n, **({"4xx": counts["4xx"], "5xx": counts["5xx"],
                    "failed": counts["failed"], "failed_pct": round(100.0 * counts["failed"] / n, 4) if n else 0.0}
                    if status_logged else {"4xx": None, "5xx": None, "failed": None, "failed_pct": None}),
                    **{k: v for k, v in pst.items() if k in ("p50", "p95", "p99")}, "timed": int(pst.get("count", 0)),
                    "paths": [{"path": _s(k), "hits": v} for k, v in top(paths.get(host, Counter()), 5)]})
    return out


#: one address with this share of the requests (or more) is a proxy's when the passed-on client varies
PROXY_SHARE_PCT = 90.0
PROXY_MIN_REQUESTS = 20


def clients_summary(p: AccessPartial, *, client_ip: str, forwarded: str | None,
                    xff_logged: bool | None = None) -> dict[str, Any]:
    """Where the client addresses come from, and ``proxy``: set when nearly every request (at least
    :data:`PROXY_SHARE_PCT` %) comes from one private address — a load balancer or reverse proxy in front of
    nginx, so visitors, top clients, 404 bursts and brute force would all count the proxy — with how many
    distinct values the variable holding the client a proxy passed on has (``forwarded``:
    ``http_x_forwarded_for``, ``http_x_real_ip``, ``proxy_protocol_addr`` or a header's ``http_name``, None when
    the format has none; ``passed_on``: with ``client_ip`` other than remote_addr, the lines per outcome of
    reading it, see :data:`~upkeeper.logs.clientip.OUTCOMES`;
    at most :data:`FORWARDED_KEEP` are counted).  ``xff_logged`` overrides whether it is logged (no format known)."""
    logged = forwarded is not None if xff_logged is None else xff_logged
    out: dict[str, Any] = {"client_ip": client_ip, "forwarded_for_logged": logged, "forwarded_variable": forwarded,
                           "forwarded_for_distinct": len(p.forwarded), "proxy": None, "passed_on": None}
    if p.client_outcomes:  # lines per outcome of reading the passed-on client (clientip.OUTCOMES)
        out["passed_on"] = {**{k: p.client_outcomes.get(k, 0) for k in OUTCOMES},
                            "untrusted_examples": [_s(x) for x in p.client_examples.get("untrusted", [])],
                            "invalid_examples": [_s(x) for x in p.client_examples.get("invalid", [])]}
    if p.valid < PROXY_MIN_REQUESTS or not p.hosts:
        return out
    (ip, hits), = top(p.hosts, 1)
    share = 100.0 * hits / p.valid
    try:
        private = ipaddress.ip_address(ip.decode("ascii").strip("[]")).is_private
    except (UnicodeDecodeError, ValueError):
        private = False
    if share >= PROXY_SHARE_PCT and private and (not logged or len(p.forwarded) > 1):
        out["proxy"] = {"ip": _s(ip), "share_pct": round(share, 2), "forwarded_for_distinct": len(p.forwarded),
                        "forwarded_variable": forwarded}
    return out


def prune_requests(p: AccessPartial, keep: int) -> None:
    """Leave out of ``p.ga_requests`` its least seen keys, those counted at most some ``t`` times, the smallest
    ``t`` that leaves at most ``keep``: their hits go to ``ga_pruned_hits`` and, per path, to ``ga_pruned_paths``;
    ``ga_pruned_error`` grows by ``t`` (what a key still counted, or counted again later, may miss)."""
    ga = p.ga_requests
    if len(ga) <= keep:
        return
    by_count = Counter(ga.values())
    gone, t = 0, 0
    for c in sorted(by_count):
        gone += by_count[c]
        t = c
        if len(ga) - gone <= keep:
            break
    left = [k for k, c in ga.items() if c <= t]
    paths = p.ga_pruned_paths
    for k in left:
        c = ga.pop(k)
        p.ga_pruned_hits += c
        path = k.partition(b"\0")[0].partition(b"?")[0]
        paths[path] = paths.get(path, 0) + c
    p.ga_pruned_error += t


def all_paths(p: AccessPartial) -> Counter[bytes]:
    """Hits per path (decoded, without query) over every request: GoAccess's requested files, the static
    files and the 404s (disjoint sets, so nothing is counted twice)."""
    out: Counter[bytes] = Counter()
    try:
        from upkeeper.logs._cut import path_counts
    except ImportError:  # built without a C compiler
        get = out.get
        for k, c in p.ga_requests.items():
            path = k.partition(b"\0")[0].partition(b"?")[0]
            out[path] = get(path, 0) + c
    else:
        out.update(path_counts(p.ga_requests))  # (the same loop in C)
    out.update(p.ga_pruned_paths)
    out.update(p.static_paths)
    out.update(p.not_found)
    return out


def top_paths(p: AccessPartial, n: int) -> list[tuple[bytes, int]]:
    """``top(all_paths(p), n)``: the ``n`` busiest paths, ties broken by path.  In C (``_cut.path_top``) only the
    paths that may be among them are made (a 100 MB log's summary: 6 ms instead of 18 for its 70,000 paths)."""
    picked = (_path_top(p.ga_requests, [p.ga_pruned_paths, p.static_paths, p.not_found], n)
              if _path_top is not None and n > 0 else None)
    if picked is None:  # (no C extension, a count that is not a machine integer, n < 1)
        return top(all_paths(p), n)
    return top(Counter(dict(picked)), n)  # (the candidates, each path once: ordered, ties broken by path)


def _status_in(code: str, spec: str) -> bool:
    """Does ``code`` fall in ``spec`` (as :func:`parse_statuses` returns it: ``5xx``, ``500,502-504``)?"""
    for part in spec.split(","):
        if part.endswith("xx"):
            if code[:1] == part[0]:
                return True
        elif "-" in part:
            lo, hi = part.split("-", 1)
            if code.isdigit() and int(lo) <= int(code) <= int(hi):
                return True
        elif code == part:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# the protocol of upkeeper.logs.parallel
# ---------------------------------------------------------------------------------------------


# -- a log_format that matches none of a file's lines ---------------------------------------------

#: a file whose first this many lines (of what a run reads of it: from its cursor) all fail to parse is not read
#: on (:func:`wrong_format`).  Unparsable lines cost 5–50 µs each (the line-by-line parser runs on each, after
#: the columnar split failed): 10,000 of them are 0.05–0.5 s, where the gigabyte of a log in another format
#: (4–5 million lines) is minutes.  And a log in the right format never begins with this many lines that do not
#: parse (a scanner's binary probe, NUL padding after a crash, the lines before a log_format change are a few or
#: a stretch a run reads past): 10,000 lines is hours of a busy site's traffic, days of a quiet one's.
PROBE_LINES = 10_000
#: ... unless some of its last this many lines parse (what it reads of a plain file; a compressed one is decompressed
#: to its end for them, 0.25 s for 226 MB, where parsing them took a minute): nginx's log_format changed in the
#: middle of the file, its lines before the change fail and those after parse — read it all, as before, or its
#: cursor would stay before the change for good, and the lines after it never be read (a rotated .gz file's were)
PROBE_TAIL_LINES = 1_000
#: bytes of the end of a file kept for its last lines (:data:`PROBE_TAIL_LINES` of 300 bytes)
PROBE_TAIL_BYTES = 512 << 10
PROBE_SAMPLES = 3  # unparsable lines a finding quotes


@dataclass(frozen=True)
class WrongFormat:
    """A file (``path``) none of whose first ``lines`` lines from ``start`` parse with the log_format."""

    path: str
    start: int
    lines: int
    reasons: dict[str, int]
    #: the first :data:`PROBE_SAMPLES` of them: ``offset``, ``reason``, ``line`` (credential fields masked)
    samples: list[dict[str, Any]]


def _lines_apart(buf: bytes, byte: bytes) -> list[tuple[int, int]]:
    """``buf`` (lines ending with a newline) cut, in order, into runs of lines: those holding ``byte`` and those
    between them; (start, end) each."""
    runs: list[tuple[int, int]] = []
    pos, n = 0, len(buf)
    i = buf.find(byte)
    while i >= 0:
        start = buf.rfind(NL, 0, i) + 1
        end = buf.find(NL, i) + 1 or n
        if start > pos:  # the lines before it
            runs.append((pos, start))
            runs.append((start, end))
        elif runs:  # (right after another line holding it)
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
        pos = end
        i = buf.find(byte, end)
    if pos < n:
        runs.append((pos, n))
    return runs


def _last_bytes(first: bytes, buffers: Iterator[tuple[int, bytes]], size: int) -> bytes:
    """The last lines, about ``size`` bytes of them (whole lines, from a line start), of ``first`` and then
    ``buffers`` (:func:`~upkeeper.logs.parallel.read_unit`'s: each of complete lines)."""
    kept: deque[bytes] = deque([first] if first else [])
    held = len(first)
    for _off, buf in buffers:
        kept.append(buf)
        held += len(buf)
        while held - len(kept[0]) >= size:
            held -= len(kept.popleft())
    window = b"".join(kept)
    if len(window) > size:
        cut = window.find(NL, len(window) - size)
        window = window[cut + 1:] if cut >= 0 else b""
    return window


def wrong_format(opts: ScanOptions, unit: Unit, *, lines: int = PROBE_LINES, tail: int = PROBE_TAIL_LINES,
                 tail_bytes: int = PROBE_TAIL_BYTES) -> WrongFormat | None:
    """Whether none of the first ``lines`` lines of ``unit`` (a range a run is to read: from its start, a line
    start, to its end) parse with the format of ``opts``, nor any of its last ``tail`` ones: then
    reading it on would only count unparsable lines, at the line-by-line parser's speed.  None as soon as a line
    parses, and when the range holds fewer than ``lines`` lines (a small file is read, its lines counted as
    unparsed as any).  Empty lines and ``#`` comments are skipped, as the scan skips them.  The rest of a
    compressed file (from an offset past its start: the live file a run read part of, compressed since) is not
    tried: trying it would decompress what comes before it once more, for the tail of a file mostly read already.
    Raises what reading raises (OSError, :class:`~upkeeper.logs.parallel.FileChanged`)."""
    from upkeeper.logs.parallel import read_unit

    if unit.gz and unit.start > 0:
        return None

    ga = to_goaccess(opts.log_format, internal=True, client_ip=opts.client_ip)
    parse = GoAccessLineParser(ga.log_format, ga.date_format, ga.time_format).parse
    mask = quote_mask(opts.log_format)
    reasons: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    tried = 0
    head_end = unit.start  # the end of the lines tried so far

    def fails(line: bytes, offset: int | None) -> bool:
        """Whether ``line`` (with its newline if it has one) does not parse (counted, maybe kept as a sample)."""
        try:
            parse(line)
        except LineError as exc:
            if offset is None:  # (one of the last lines: neither counted nor quoted)
                return True
            reasons[exc.kind] += 1
            if len(samples) < PROBE_SAMPLES:
                text = mask_line(line.rstrip(NL), mask)[:300].decode("utf-8", errors="replace")
                samples.append({"offset": offset, "reason": str(exc), "line": printable(text)[:300]})
            return True
        return False

    reader = read_unit(unit, 64 << 10)
    window = b""  # the last lines of a compressed file (those after the first ``lines``)
    try:
        for off, buf in reader:
            pos = 0
            while pos < len(buf) and tried < lines:
                nl = buf.find(NL, pos)
                end = len(buf) if nl < 0 else nl + 1
                line = buf[pos:end]
                if line not in (b"", NL) and line[:1] != b"#":
                    tried += 1
                    if not fails(line, off + pos):
                        return None
                pos = end
            head_end = off + pos
            if tried >= lines:
                if unit.gz and tail > 0:  # decompressed to its end (far faster than parsing it) for its last
                    window = _last_bytes(buf[pos:], reader, tail_bytes)  # lines: see PROBE_TAIL_LINES
                break
    finally:
        reader.close()
    if tried < lines:
        return None
    if unit.end is not None and not unit.gz and unit.end > head_end and tail > 0:
        at = max(head_end, unit.end - tail_bytes)
        with open(unit.path, "rb") as fh:
            fh.seek(at)
            window = fh.read(unit.end - at)
        if at > head_end:  # (from the first line start in it)
            window = window[window.find(NL) + 1:] if NL in window else b""
    if window:
        last = window.split(NL)
        if last and not last[-1]:
            last.pop()
        for line in reversed(last[-tail:]):
            if line and line[:1] != b"#" and not fails(line + NL, None):
                return None
    return WrongFormat(unit.label or unit.path, unit.start, tried, dict(reasons.most_common()), samples)


def make_accumulator(opts: ScanOptions) -> Accumulator:
    return Accumulator(opts)


def units(ranges: list[Any], workers: int) -> list[Any]:
    """The pieces of a read of an access log (its lines are independent: many, the last ones quartered; see
    :func:`upkeeper.logs.parallel.units_for`), for ``workers`` processes (0: the default)."""
    from upkeeper.logs import parallel

    return parallel.units_for(ranges, workers=workers, per_process=parallel.ACCESS_PIECES, tail=parallel.ACCESS_TAIL)


#: the ``logs.nginx`` options a read ahead knows how to turn into :class:`ScanOptions` as written (a list of strings
#: each): any other option that changes what a scan counts (``login_paths``, ``rotated_dirs``) rules it out
_AS_TUPLES = ("static_extensions", "trusted_proxies", "public_paths", "free_text_paths")


def speculation(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[ScanOptions, bytes, list[Any]] | None:
    """For a helper that reads ahead (:mod:`upkeeper.logs.speculate`): the scan options and pieces of a ``logs.nginx``
    run that reads its whole log (``incremental: false``), guessed from the job's ``options`` and its ``target``'s
    settings as written in the config file, before they are validated; None when that cannot be told (a glob, an
    incremental run, options it does not know how to read).  Only a guess: the scan compares it with its own plan,
    and uses nothing of what was read ahead unless they are equal."""
    from upkeeper.logs import sources

    path = options.get("access_log") or target.get("access_log")
    workers = options.get("workers", 0)
    max_files = options.get("max_files", 30)
    if (options.get("incremental") is not False or not isinstance(path, str) or not path or sources.is_glob(path)
            or options.get("login_paths") is not None or options.get("rotated_dirs")
            or not all(type(v) is int for v in (workers, max_files))):
        return None
    given = {k: options[k] for k in _AS_TUPLES if k in options}
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in given.values()):
        return None
    log_format = options.get("log_format", "combined")  # (the job's default: the name)
    client_ip = options.get("client_ip", "remote_addr")
    if not isinstance(log_format, str) or not isinstance(client_ip, str):
        return None
    kw: dict[str, Any] = {k: tuple(v) for k, v in given.items()}
    opts = ScanOptions(log_format=log_format, client_ip=client_ip, **kw)
    files = sources.discover(path, rotated=options.get("rotated", True) is not False, max_files=max_files)
    plan = sources.plan_reads(files, [], incremental=False)
    return opts, b"", units(plan.ranges, workers)


def warm() -> None:
    """Import what a scan of large buffers needs (pyarrow, the C line cut): called ahead of a scan that is to come
    (:func:`upkeeper.logs.parallel.prestart`, :meth:`upkeeper.tasks.logs.nginx.NginxLogs.head_start`), not on the
    way of small reads, which never need pyarrow."""
    from upkeeper.logs.arrowscan import preload

    preload()


#: formats tried on a log whose lines do not fit the configured one field for field (:func:`suggest_format`): the
#: named ones, and the usual additions to them (nginx's docs' upstream timing example, a proxy's address, times)
FORMAT_CANDIDATES: tuple[str, ...] = (
    "combined", "combined_timed", "main",
    MAIN + " $request_time",
    COMBINED_TIMED + " $upstream_response_time",
    MAIN + " $request_time $upstream_response_time",
    COMBINED + ' rt=$request_time uct="$upstream_connect_time" uht="$upstream_header_time" '
               'urt="$upstream_response_time"',
)
#: bytes of a log's first lines that :func:`suggest_format` tries
SUGGEST_SAMPLE = 64 << 10


@dataclass(frozen=True)
class FormatHint:
    """A format that fits a log's lines field for field where the configured one does not (:func:`suggest_format`):
    ``fits`` of ``lines`` sample lines took the vectorized paths with it, ``current_fits`` with the configured one;
    ``tail``: what a sample line holds past the configured format's last field; ``current_parsed``: lines the
    configured one parses at all (the others it counts as unparsed)."""

    log_format: str
    lines: int
    fits: int
    current_fits: int
    tail: str
    current_parsed: int


def format_mismatch(lines: int, current_parsed: int, current_fits: int, tail: str, log_format: str) -> str:
    """What ``log_format`` does to a sample's lines, in words (a :class:`FormatHint`'s figures): lines with more
    fields than it (parsed, what follows its last field not read), and lines it does not parse at all."""
    parts = []
    longer = current_parsed - current_fits
    if longer > 0:
        parts.append(f"{longer:,} of the first {lines:,} lines have more fields than the log_format {log_format!r}"
                     + (f" (they go on with '{tail}')" if tail else "") + ": what follows its last field is not read")
    if lines > current_parsed:
        parts.append(f"{lines - current_parsed:,} of the first {lines:,} lines do not parse with the log_format "
                     f"{log_format!r} (counted as unparsed: nothing of them is read)")
    return "; ".join(parts)


def _fit(log_format: str, sample: bytes, client_ip: str) -> tuple[int, int, int, bool]:
    """(lines, lines parsed, lines the fast path took, has $request_time) of ``sample`` read with ``log_format``."""
    acc = Accumulator(ScanOptions(log_format=log_format, client_ip=client_ip, arrow=False,
                                  arrow_min_buffer=1 << 62, samples=1))
    acc.feed(sample)
    p = acc.p
    return p.lines, p.valid, p.fast_lines, has_variable(log_format, "request_time")


def suggest_format(sample: bytes, current: str, client_ip: str = "remote_addr") -> FormatHint | None:
    """A format of :data:`FORMAT_CANDIDATES` that reads ``sample`` (a log's first lines, whole) field for field
    — on the vectorized paths, as many lines as the configured ``current`` parses, and no fewer variables — where
    ``current`` leaves at least half of the lines to the line-by-line parser (lines with more fields than the
    format: GoAccess ignores what follows the format's last field, at ~4x the cost, and a $request_time there is not
    read).  None when ``current`` fits, or no candidate fits better."""
    cut = sample.rfind(NL) + 1
    sample = sample[:cut]
    if not sample:
        return None
    try:
        lines, valid, fast, _timed = _fit(current, sample, client_ip)
    except Exception:  # (a format the job accepted: only a hint is lost)
        return None
    if not lines or fast * 2 > lines:
        return None
    want = len(format_variables(current))
    best: tuple[int, int, str] | None = None
    for cand in FORMAT_CANDIDATES:
        text = NAMED_FORMATS.get(cand, cand)
        if text == NAMED_FORMATS.get(current, current) or len(format_variables(text)) < want:
            continue
        try:
            n, ok, f, timed = _fit(text, sample, client_ip)
        except Exception:
            continue
        if n == lines and ok >= valid and f * 20 >= lines * 19:  # 95 % fit
            key = (f, len(format_variables(text)) + timed, cand)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:
        return None
    first = sample[:sample.find(NL)]
    return FormatHint(best[2], lines, best[0], fast, _past_format(first, current, client_ip), valid)


def _past_format(line: bytes, log_format: str, client_ip: str) -> str:
    """What ``line`` holds past the last field of ``log_format`` (as text, cut), or "" when that is not told."""
    plan = split_plan(NAMED_FORMATS.get(log_format, log_format), client_ip)
    if plan is None or not plan.quotes or not NAMED_FORMATS.get(log_format, log_format).rstrip().endswith('"'):
        return ""  # (a format ending with an unquoted field: where it ends in a line is not told here)
    pos, seen = -1, 0
    while seen < 2 * plan.quotes:
        pos = line.find(b'"', pos + 1)
        if pos < 0:
            return ""
        if line[pos - 1:pos] != b"\\":
            seen += 1
    return printable(line[pos + 1:].decode("utf-8", errors="replace").strip())[:80]
