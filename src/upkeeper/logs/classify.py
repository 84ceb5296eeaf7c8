"""Classify requests and user agents: endpoints, bots, scanners and attack patterns.

Everything here works on *distinct* values (each request line or user agent is
classified once per scan, however often it occurs), so it can afford regexes.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from urllib.parse import unquote_to_bytes

_unquote: Callable[[bytes], bytes]
try:  # the same in C (~30x faster on a 200-byte referer): built with the access-log cut, optional
    from upkeeper.logs._cut import unquote as _unquote
except ImportError:  # pragma: no cover - an install without a C compiler
    _unquote = unquote_to_bytes

# ---------------------------------------------------------------------------------------------
# Endpoint normalization: /api/users/42/orders/9f1c…  →  GET /api/users/:id/orders/:uuid
# ---------------------------------------------------------------------------------------------

_REQ_LINE = re.compile(rb"(?m)^[ \t\r\x0b\x0c]*(?:([A-Za-z][A-Za-z-]{0,19}) +([^ \t?#\n]*)|(/[^ \t?#\n]*))[^\n]*$|^[^\n]*$")
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMAIL = re.compile(rb"(?<=/)[^/@\s]+@[^/@\s]+(?=/|$)", re.M)
#: a number that is a whole path segment (up to an extension or parameter), with its slash: the literal slash
#: first lets ``re`` skip to the candidates (a look-behind tried at every byte cost 3 times as much)
_NUM = re.compile(rb"/[0-9]+(?=[/.;,\n]|\Z)")
# long words with a digit: content hashes (hex) or opaque tokens; decided by _word
_WORD = re.compile(rb"(?<![A-Za-z0-9_-])(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{8,}(?![A-Za-z0-9_-])")
_HEXRUN = re.compile(rb"[0-9a-fA-F]{8,}")

ENDPOINT_MAX = 160


def _word(m: re.Match[bytes]) -> bytes:
    w = m.group()
    if _HEXRUN.fullmatch(w) and any(c in b"abcdefABCDEF" for c in w):
        return b":hash"  # content hashes, object ids
    if len(w) >= 20 and any(65 <= c <= 90 or 97 <= c <= 122 for c in w):
        return b":token"  # long opaque tokens (base64url and friends)
    return w


#: (RE2 syntax) 8 characters of a word holding a digit (its first digit after ``a`` other word characters): a
#: path without them has no match of _WORD, whose matches are the whole runs of word characters, 8 or more,
#: with a digit (written with the first digit, RE2's automaton is smaller and a third faster)
WORD_WINDOW = "|".join(f"[A-Za-z_-]{{{a}}}[0-9][A-Za-z0-9_-]{{{7 - a}}}" for a in range(8))

#: which of these lines match :data:`WORD_WINDOW` (their indexes)
WordFilter = Callable[[list[bytes]], list[int]]


def _placeholders(paths: bytes, word_lines: WordFilter | None = None) -> list[bytes]:
    """Ids, UUIDs, e-mail addresses, hashes and tokens in newline-separated paths → placeholders (a list of
    the lines).  ``word_lines`` picks the lines that may hold a hash or token (Python's ``re`` tries _WORD's
    look-behind at every byte: the pyarrow path picks the few lines with RE2)."""
    if b"-" in paths:
        paths = _UUID.sub(b":uuid", paths)
    if b"@" in paths:
        paths = _EMAIL.sub(b":email", paths)
    paths = _NUM.sub(b"/:id", paths)
    if word_lines is None:
        return _WORD.sub(_word, paths).split(b"\n")
    lines = paths.split(b"\n")
    some = word_lines(lines)
    if some:
        done = _WORD.sub(_word, b"\n".join([lines[i] for i in some])).split(b"\n")
        for i, line in zip(some, done, strict=True):
            lines[i] = line
    return lines


def _split_requests(raws: list[bytes]) -> list[tuple[bytes, bytes, bytes]]:
    """(method, path, bare path) for many request lines, one regex pass."""
    return _REQ_LINE.findall(b"\n".join(raws))


def normalize_endpoints(raws: list[bytes]) -> list[bytes]:
    """``METHOD /path`` with ids, UUIDs, hashes and tokens replaced by placeholders; query dropped.

    Works on all ``raws`` at once (one regex pass each over the joined lines).  A request
    that is not ``METHOD PATH …`` maps to ``(invalid)``.
    """
    return endpoints_and_paths(raws)[0]


def endpoints_and_paths(raws: list[bytes], word_lines: WordFilter | None = None) -> tuple[list[bytes], list[bytes]]:
    """:func:`normalize_endpoints` and :func:`request_paths` in one pass (``word_lines``: see
    :func:`_placeholders`)."""
    if not raws:
        return [], []
    parts = _split_requests(raws)
    plain = [p or b or b"-" for _m, p, b in parts]
    norm = _placeholders(b"\n".join(p for _m, p, _b in parts), word_lines)
    res: list[bytes] = []
    for (meth, _p, _b), path in zip(parts, norm, strict=True):
        if not meth or path[:1] not in (b"/", b"*"):
            res.append(b"(invalid)")
            continue
        res.append(meth.upper() + b" " + path[:ENDPOINT_MAX])
    return res, plain


def request_paths(raws: list[bytes]) -> list[bytes]:
    """The path of each request line, without its query string (``-`` when there is none)."""
    return [p or b or b"-" for _m, p, b in _split_requests(raws)] if raws else []


def request_path(raw: bytes) -> bytes:
    return request_paths([raw])[0]


_ABSOLUTE_URI = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_SLASH_RUN = re.compile(rb"/{2,}")


def nginx_uri(path: bytes) -> bytes:
    """A request path as nginx matches it against its locations (ngx_http_parse_complex_uri): the scheme and host
    of an absolute request line dropped, percent-encoding decoded, runs of slashes merged (``merge_slashes``
    on, the default), ``.`` and ``..`` segments resolved.  ``//wp-login.php``, ``/wp-login%2ephp`` and
    ``http://host/wp-login.php`` all reach ``/wp-login.php``."""
    path = _ABSOLUTE_URI.sub(b"", path, count=1) or b"/"
    if b"%" in path:
        path = _unquote(path)
    path = _SLASH_RUN.sub(b"/", path)
    if b"/." in path:
        segments: list[bytes] = []
        parts = path.split(b"/")
        for seg in parts[1:]:
            if seg == b"..":
                if segments:
                    segments.pop()
            elif seg not in (b".", b""):  # b"": the end of a path ending with a slash
                segments.append(seg)
        trailing = parts[-1] in (b"", b".", b"..") and bool(segments)
        path = b"/" + b"/".join(segments) + (b"/" if trailing else b"")
    return path


def request_method(raw: bytes) -> bytes:
    return raw.strip().split(b" ", 1)[0].upper()


# ---------------------------------------------------------------------------------------------
# Bots and scanners (by user agent)
# ---------------------------------------------------------------------------------------------

#: Tools that only ever probe for weaknesses, and exploits sent as the user agent.  Sources: fail2ban's apache-badbots list,
#: CrowdSec's http-bad-user-agent scenario, OWASP CRS scanner-detection (rule 913100).
SCANNER_AGENTS: tuple[tuple[str, str], ...] = (
    ("sqlmap", r"sqlmap"), ("nikto", r"nikto"), ("nmap", r"nmap"), ("masscan", r"masscan"), ("zgrab", r"zgrab"),
    ("nuclei", r"nuclei"), ("wpscan", r"wpscan"), ("dirbuster", r"dirbuster"), ("dirb", r"\bdirb\b"),
    ("gobuster", r"gobuster"), ("feroxbuster", r"feroxbuster"), ("ffuf", r"\bffuf\b|fuzz faster u fool"),
    ("wfuzz", r"wfuzz"), ("acunetix", r"acunetix|wvs"), ("nessus", r"nessus"), ("openvas", r"openvas"),
    ("w3af", r"w3af"), ("hydra", r"\bhydra\b"), ("zmeu", r"zmeu|morfeus"), ("jorgee", r"jorgee"),
    ("havij", r"havij"), ("commix", r"commix"), ("whatweb", r"whatweb"), ("arachni", r"arachni"),
    ("netsparker", r"netsparker"), ("appscan", r"appscan"), ("l9explore", r"l9explore|l9tcpid"),
    ("censys", r"censysinspect"), ("expanse", r"expanse, a palo alto"), ("xpanse", r"xpanse"),
    # nuclei's out-of-band callback hosts (interactsh's public servers, its README's -interactsh-server
    # default), in a payload sent as the user agent; nuclei itself sends a random browser's user agent
    ("interactsh", r"\.oast\.(?:pro|live|site|online|fun|me)\b|\.interact\.sh\b"),
    # an exploit sent as the user agent: Shellshock (nmap's http-shellshock), Log4Shell and its obfuscations
    ("shellshock", r"\(\)\s*\{\s*:\s*;\s*\}\s*;"),
    ("log4shell", r"\$\{\s*(?:jndi\s*:|[^}]{0,20}\$\{|(?:lower|upper|::-)[^}]{0,40}\})"),
)  # fmt: skip
#: matched against the lower-cased agent: the patterns are lower-case (tests/logs/test_agents_equivalence.py checks
#: it), so the answers are those of a case-insensitive match, which ``re`` runs several times slower
_SCANNER_RX = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in SCANNER_AGENTS).encode())
#: each alternative of :data:`SCANNER_AGENTS` needs one of these in the lower-cased agent: an agent without any (most
#: of them) is no scanner's without trying the patterns.  A new pattern needs its word here (the test above says)
_SCANNER_WORDS = (
    b"sqlmap", b"nikto", b"nmap", b"masscan", b"zgrab", b"nuclei", b"wpscan", b"dirb", b"gobuster", b"feroxbuster",
    b"ffuf", b"fuzz", b"acunetix", b"wvs", b"nessus", b"openvas", b"w3af", b"hydra", b"zmeu", b"morfeus", b"jorgee",
    b"havij", b"commix", b"whatweb", b"arachni", b"netsparker", b"appscan", b"l9explore", b"l9tcpid",
    b"censysinspect", b"xpanse", b".oast.", b".interact.sh", b"()", b"${",
)

#: Crawlers, monitors, libraries and command-line clients.  Sources: GoAccess's browsers.c crawler
#: entries, the crawler-user-agents project and the "bot/crawl/spider" convention of robots.  A crawler
#: is matched by its robot's name (``DuckDuckBot``, ``Pinterestbot``, ``Baiduspider``, ``YandexBot``,
#: ``SeznamBot``), never by its company's: ``DuckDuckGo/5`` (the DuckDuckGo browser), ``[Pinterest/iOS]``
#: (the Pinterest app's browser), ``baiduboxapp`` or ``YandexSearch`` (apps) and ``SogouMobileBrowser`` are
#: people.  ``CUBOT`` (a phone brand, ``Android 11; CUBOT NOTE 20``) is not a ``bot``.
_BOT_RX = re.compile(
    rb"(?<!cu)bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|facebookcatalog|embedly|quora link|"
    rb"mediapartners|adsbot|bingpreview|yandex\.com/bots|baidumobaider|exabot|ia_archiver|semrush|ahrefs|mj12|"
    rb"dotbot|petalbot|bytespider|gptbot|claudebot|ccbot|applebot|pinterest/0\.|"
    rb"uptimerobot|pingdom|statuscake|site24x7|newrelicpinger|datadog|nagios|zabbix|monit/|"
    rb"prometheus|blackbox|kube-probe|elb-healthchecker|googlehc|health.?check|"
    rb"curl/|wget/|python-requests|python-urllib|aiohttp|httpx|go-http-client|java/|okhttp/3\.[0-9]+\.[0-9]+$|"
    rb"libwww-perl|lwp::|apache-httpclient|node-fetch|axios/|postmanruntime|insomnia|"
    rb"httpclient|scrapy|phantomjs|headlesschrome|lighthouse|wrk|apachebench|^ab/|jmeter|locust|k6/",
)  # over the lower-cased agent, as _SCANNER_RX
#: each alternative of :data:`_BOT_RX` needs one of these (as :data:`_SCANNER_WORDS` for :data:`SCANNER_AGENTS`)
_BOT_WORDS = (
    b"bot", b"crawl", b"spider", b"slurp", b"archiver", b"facebookexternalhit", b"facebookcatalog", b"embedly",
    b"quora link", b"mediapartners", b"bingpreview", b"baidumobaider", b"semrush", b"ahrefs", b"mj12",
    b"pinterest/0.", b"pingdom", b"statuscake", b"site24x7", b"newrelicpinger", b"datadog", b"nagios", b"zabbix",
    b"monit/", b"prometheus", b"blackbox", b"kube-probe", b"elb-healthchecker", b"googlehc", b"health", b"curl/",
    b"wget/", b"python-requests", b"python-urllib", b"aiohttp", b"httpx", b"go-http-client", b"java/", b"okhttp/3.",
    b"libwww-perl", b"lwp::", b"httpclient", b"node-fetch", b"axios/", b"postmanruntime", b"insomnia", b"scrapy",
    b"phantomjs", b"headlesschrome", b"lighthouse", b"wrk", b"apachebench", b"ab/", b"jmeter", b"locust", b"k6/",
)


def _words_rx(words: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """A search for any of ``words``, grouped by their first byte (``a(?:b/|hrefs|…)|b(?:ot|…)``): ``re`` tries
    the alternatives one by one at each position, a group only where its first byte is."""
    groups: dict[bytes, list[bytes]] = {}
    for w in words:
        groups.setdefault(w[:1], []).append(w[1:])
    return re.compile(b"|".join(re.escape(k) + b"(?:" + b"|".join(map(re.escape, rest)) + b")"
                                for k, rest in groups.items()))


#: the pre-filters: an agent without any of the words (most agents: browsers and apps) cannot match the patterns,
#: which ``re`` tries alternative by alternative at every byte; the words alone are searched several times faster
_BOT_WORDS_RX = _words_rx(_BOT_WORDS)
_SCANNER_WORDS_RX = _words_rx(_SCANNER_WORDS)


#: A user agent is classified (bot, scanner) on its first 8 KiB.  Both patterns are linear, but Python's ``re``
#: tries each of their many alternatives at every position (about 1 µs a byte): a 300 KB agent took 2 s, and a
#: log of many distinct long agents (any client can send one) took hours.  nginx's default
#: ``large_client_header_buffers 4 8k`` refuses a longer header line, so a server with the default limits
#: logs no longer agent and nothing changes; a robot's name and an exploit sent as the agent come first.
#: The agent itself is counted whole (visitors, top agents), as GoAccess does.
AGENT_CLASSIFIED_BYTES = 8192


#: attack categories judged in a user agent too, named ``<category>_in_agent``: sqlmap from ``--level 3`` on injects
#: its payloads into the User-Agent header (``-8613) OR 3727=3103-- fkGd``), scanners send XSS and shell payloads
#: there; a browser's or a robot's user agent has none of :data:`_AGENT_HINT` but ``=`` in a URL
_AGENT_ATTACKS = ("sql_injection", "command_injection", "xss", "path_traversal")
_AGENT_HINT = re.compile(rb"['<>=`|$%\\]|\.\./")


def scanner_name(agent: bytes) -> str | None:
    """The scanner a user agent names (:data:`SCANNER_AGENTS`), or ``<category>_in_agent`` for an attack pattern
    of :data:`_AGENT_ATTACKS` in it (on its first :data:`AGENT_CLASSIFIED_BYTES`), or None."""
    low = agent[:AGENT_CLASSIFIED_BYTES].lower()
    if _SCANNER_WORDS_RX.search(low):
        m = _SCANNER_RX.search(low)
        if m:
            return m.lastgroup
    return _attack_in_agent(low)


def _attack_in_agent(low: bytes) -> str | None:
    """``<category>_in_agent`` for the first of :data:`_AGENT_ATTACKS` in a lower-cased agent (its classified
    bytes), or None."""
    if _AGENT_HINT.search(low):
        dec = decode_request(low)  # which lower-cases first: the same for ``low`` as for the agent
        for cat in _AGENT_ATTACKS:
            if _ATTACK_RX[cat].search(dec):
                return cat + "_in_agent"
    return None


#: exploits judged in the Referer header too (nmap's http-shellshock and Log4Shell scanners send theirs there as well),
#: named ``<name>_in_referer``: unambiguous payloads only — a referer is another page's URL, often with a query
_REFERER_EXPLOITS = ("shellshock", "log4shell", "interactsh")
_REFERER_RX = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in SCANNER_AGENTS if n in _REFERER_EXPLOITS).encode(),
                         re.I)
_REFERER_HINT = re.compile(rb"[{%\\]|oast\.|interact\.sh", re.I)


def referer_exploit(referer: bytes) -> str | None:
    """``<name>_in_referer`` for a Shellshock, Log4Shell or interactsh payload in a referer (its first
    :data:`AGENT_CLASSIFIED_BYTES`, nginx's escapes and percent-encoding undone), or None."""
    if not _REFERER_HINT.search(referer, 0, AGENT_CLASSIFIED_BYTES):
        return None
    m = _REFERER_RX.search(decode_request(referer[:AGENT_CLASSIFIED_BYTES]))
    return f"{m.lastgroup}_in_referer" if m else None


def is_bot(agent: bytes) -> bool:
    """Crawlers, monitors, tools and scripts; an empty user agent (``-``) counts as a bot.  Only the first
    :data:`AGENT_CLASSIFIED_BYTES` are read."""
    a = agent.strip()
    if a in (b"-", b""):
        return True
    low = a[:AGENT_CLASSIFIED_BYTES].lower()
    if _BOT_WORDS_RX.search(low) and _BOT_RX.search(low):
        return True
    if _SCANNER_WORDS_RX.search(low) and _SCANNER_RX.search(low):
        return True
    return _attack_in_agent(low) is not None


# ---------------------------------------------------------------------------------------------
# Attack patterns (by request line)
# ---------------------------------------------------------------------------------------------

#: Paths of software a site may well run itself (WordPress, phpMyAdmin, Adminer, Solr, Tomcat's manager, JBoss,
#: Exchange, FortiGate's VPN portal, Laravel Telescope): a request for one is a scanner probe only when the site
#: answers it 4xx, i.e. does not serve it to that client (see :func:`counted_category`); on a WordPress site
#: ``POST /wp-login.php`` answered 302 is a user logging in and ``/wp-includes/js/jquery.js`` a page's script.
SOFTWARE_PROBE = "software_probe"

#: category → pattern over the decoded, lower-cased request line (see :func:`decode_request`).
#: Sources: OWASP Core Rule Set (930 LFI, 932 RCE, 941 XSS, 942 SQLi), fail2ban nginx-botsearch, and the
#: requests sqlmap, wfuzz's and nmap's payload lists send (tests/logs/test_classify.py has them as nginx
#: logged them).  Words that are also everyday words (``select``, ``union``, ``drop``, ``update``) only count
#: in SQL syntax: ``union select``, ``and 1=1``, ``' or 'a'='a``, ``(select``, ``order by 1--``.
ATTACK_PATTERNS: dict[str, str] = {
    "sql_injection": (
        r"union(?:\s|/\*.*?\*/|\+|\()+(?:(?:all|distinct)(?:\s|/\*.*?\*/|\+)+)?\(?select(?:\s|\+|\()*"
        r"(?:[\d'\"(*@`-]|null\b|top\s+\d|[\w.$]+\s*(?:[(,|]|--|#|;|/\*|\bfrom\b))|"
        r"['\"]\)*\s*union(?:\s|\()+(?:all\s+)?\(?select\b|"
        r"\bselect\s+(?:\*|[\w.]+(?:\s*,\s*[\w.]+)*)\s+from\s+[\w.$]+.{0,80}\bwhere\b|"
        # a tautology, its number written as arithmetic too (Acunetix's ``-1 OR 2+552-552-1=0+0+0+1 --`` and
        # ``' AND 3*2*1=6 AND '000m1Gd'='000m1Gd``)
        r"(?:\b(?:x?or|and|having)\s+|\|\|\s*|&&\s*)(?:not\s+)?\(*\s*-?\d+(?:\s*[-+*/]\s*\d+)*\s*\)*\s*"
        r"(?:[=<>]|!=|between\s|r?like\s|in\s*\()|"
        r"['\"]\)*\s*(?:(?:x?or|and|having)\b|\|\||&&)\s*(?:\(|['\"]?\w*(?:\s*[-+*/]\s*\w+)*['\"]?\s*"
        r"(?:[=<>]|!=|r?like\s)|"
        r"not\b|exists\b|select\b|\w+\s*\()|'\"|\"'|"
        # a quote closed by a comment (``admin'--``, ``1'#``); a ``#`` running to a newline is a blank by then
        # (decode_request), so one before a word is no comment of a payload but jQuery's ``$('#main')``, a CSS
        # selector searched for
        r"['\"]\s*\)*\s*(?:(?:--|#)(?:[^a-z0-9_\x80-\xff]|$)|/\*)|\(\s*select\b|\border\s+by\s+\d+\s*(?:--|#|;|/\*)|"
        r"\b(?:pg_)?sleep\s*\(\s*(?:\d+(?:\.\d+)?\s*[-+*/)]|\(|if\s*\(|select\b)|\bbenchmark\s*\(\s*\d+\s*,|"
        r"\b(?:extractvalue|updatexml|xmltype|generate_series|randomblob|"
        r"raise_error|load_file|group_concat|concat_ws|make_set|iif)\s*\(|\(\s*case\s+when\b|\bch(?:a)?r\s*\(\s*\d|\bconcat\s*\(\s*0x|"
        r"\b(?:dbms_pipe|utl_inaddr|utl_http|ctxsys)\.|\bprocedure\s+analyse\s*\(|\brdb\$database\b|@@\w|"
        r"\bwaitfor\s+delay\b|information_schema|\bexec(?:ute)?\s+(?:master\.)?(?:xp|sp)_\w|"
        r";\s*(?:drop\s+(?:table|database|schema|user|view|index|function|procedure)\b|insert\s+into\b|"
        r"update\s+\S+\s+set\b|delete\s+from\b)|;\s*(?:(?:select|exec|declare|shutdown)\b|if\s*\()|"
        r"\bxp_cmdshell\b"
    ),
    "path_traversal": (
        # ".." in the path (browsers resolve it before they send it); in a parameter two levels or one followed by a
        # known target: a documentation site's ?path=../guide/install.md is a relative link, not an attack
        r"\s/[^?\s]*?(?:\.\.[/\\;]|[/\\]\.\.(?:[/\\?\s]|$))|"
        r"(?:\.\.[/\\]|[/\\]\.\.).{0,4}?(?:\.\.[/\\]|[/\\]\.\.)|"
        r"\.\.[/\\]+(?:\.env|\.git|\.ssh|\.aws|wp-config|config\.php|web-inf|etc\b|proc\b|windows\b|"
        r"winnt[/\\]|boot\.ini|win\.ini)|/etc/passwd|/etc/shadow|/proc/self/|c:\\windows|"
        r"c:[\\/](?:windows|winnt|inetpub)[\\/]|boot\.ini|win\.ini|\.\.;/|"
        # PHP's stream wrappers in a parameter (OWASP CRS 930/931: LFI and RFI)
        r"php://(?:filter|input)|file:///|phar://|expect://"
    ),
    "xss": (
        r"<\s*/?\s*script\b|(?:java|vb)script\s*:|data:\s*text/html|onerror\s*=|onload\s*=|"
        r"<[^>]{0,200}?[\s/\"'`]on[a-z]{3,30}\s*=|[\"'`](?:[^<>&=\"'`]{0,40}[\s/])?on[a-z]{3,30}\s*=|"
        r"<\s*(?:iframe|frame|object|embed|applet|svg|math|img|image|video|audio|source|base|meta|link|isindex|"
        r"form|input|button)[\s/][^>]{0,200}?\b(?:src|href|data|srcdoc|action|formaction|content)\s*=|<xss\b|"
        r"\b(?:alert|confirm|prompt)(?:\(|`)|\((?:alert|confirm|prompt)\)|\[[\"'`](?:alert|confirm|prompt)[\"'`]\]|"
        r"\beval\(|fromcharcode\(|document\.(?:cookie|domain)"
    ),
    "command_injection": (
        r";\s*(?:wget|curl)\s+\S|;\s*(?:cat|nc|bash|sh)\s+[-/.~$'\"\d]|"
        r";\s*(?:id|uname|whoami)\b(?:\s*[;|&`]|\s*$|\s+-a\b|\s+http/)|"
        r"\|\s*(?:sh|bash)\b|`\s*(?:id|whoami|uname|cat|ls|wget|curl|sleep|ping|nslookup|echo|sh|bash)\b[^`]*`|"
        # a command chained after a value (ZAP's, Burp's and commix's ``127.0.0.1|id``, ``1&&whoami``, ``&sleep 15&``):
        # after a single pipe only when a number or a quote ends the value — ``fields=name|id`` is a field list
        r"[\d'\"]\|\|?\s*(?:id|whoami|uname)\b(?:\s*[;|&`#]|\s*$|\s+-a\b|\s+http/)|"
        r"(?:&&|\|\|)\s*(?:id|whoami|uname)\b(?:\s*[;|&`#]|\s*$|\s+-a\b|\s+http/)|"
        r"(?:[;|&`]|&&|\|\|)\s*sleep\s+\d+(?:\s*[;|&`#]|\s*$|\s+http/)|"
        # a shell's command substitution with a command in it (commix's and exploit kits' ``$(echo …)``, ``$(id)``,
        # ``$((87+42))``): not jQuery's ``$(document)``, ``$(this)``, ``$('#id')``, which developers search for
        r"\$\(\s*(?:(?:/usr)?/bin/)?(?:id|whoami|uname|cat|ls|pwd|wget|curl|sleep|ping|nslookup|dig|echo|printf|"
        r"expr|sh|bash|nc|ncat|busybox|tftp|rm|touch|chmod|python[0-9.]*|perl|php|ruby|base64|hostname|ifconfig)\b|"
        r"\$\(\(\s*\d+\s*[-+*/]\s*\d+\s*\)\)|\$\{jndi:|\$\{\$\{|/bin/(?:sh|bash)|"
        # Windows shells only with a command: a page, tag or download named after them (/blog/powershell-tips,
        # ?l=PowerShell, /downloads/PowerShell-7.4.2-win-x64.msi, /wiki/Cmd.exe) is no attack
        r"cmd\.exe(?:\?|\s+)/[ck]\b|[\\/]system32[\\/]cmd\.exe|[;|`]\s*cmd(?:\.exe)?\s+/[ck]\b|"
        r"powershell(?:\.exe)?\s+(?:-\w|iex\b|invoke-)|[;|`]\s*powershell\b|"
        # Java expression-language and OGNL injection (Struts 2, Confluence CVE-2022-26134), Spring4Shell
        # (CVE-2022-22965, nuclei's springframework-rce), ThinkPHP's invokefunction RCE, PHP code in a parameter; not
        # what documentation and Q&A sites are searched for: java.lang.Runtime.exec(, call_user_func_array, ${#arr[@]}
        r"[$%]\{\s*\(\s*#|\b(?:redirect|redirectaction|action):\s*[$%]\{|#_memberaccess\b|@java\.lang\.runtime@|"
        r"\bclass\.module\.classloader\b|think\\app/invokefunction|"
        r"<\?(?:php)?\s*(?:@?(?:system|passthru|shell_exec|exec|eval|assert|popen|proc_open|file_put_contents)\s*\(|"
        r"echo\s*\(?\s*(?:md5|shell_exec|system)\s*\()"
    ),
    # server-side request forgery aimed at a cloud's instance metadata (credentials): the addresses of AWS, GCP,
    # Azure, Oracle (169.254.169.254, also as the numbers 2852039166 and 0xa9fea9fe), Alibaba (100.100.100.200),
    # AWS's IPv6 one and host names, anywhere in the request (a parameter, a path, an absolute request line)
    "ssrf": (
        r"\b169\.254\.169\.254\b|\b100\.100\.100\.200\b|fd00:ec2::254|\bmetadata\.google\.internal\b|"
        r"\binstance-data\.ec2\.internal\b|://(?:2852039166|0xa9fea9fe)\b"
    ),
    "scanner_probe": (
        r"/\.env\b|/\.git/|/\.svn/|/\.aws/|/\.ssh/|/\.ds_store|/cgi-bin/|/vendor/phpunit|"
        r"/\.ht(?:passwd|digest)\b|/id_(?:rsa|dsa|ecdsa|ed25519)\b|/\.vscode/|/php[_-]?info\.php|/phpversion\.php|"
        r"/\.hg/|/\.bzr/|/\.(?:git|svn|hg|bzr)(?:[\s?]|$)|"
        r"/\.(?:npmrc|pypirc|pgpass|netrc|git-credentials|s3cfg)\b|/\.(?:bash|zsh|sh|mysql|psql|php|python)_history|"
        r"/web-inf/|"
        r"/phpunit/|/eval-stdin\.php|/server-(?:status|info)|/hnap1|/boaform|"
        # Spring Boot's actuator: the endpoints that hand out secrets or the application's inside, or control it (its
        # info, metrics and prometheus ones, which monitoring reads on purpose, are software probes below)
        r"/actuator/?(?:[\s?]|$)|/actuator/(?:env|heapdump|gateway|mappings|configprops|beans|trace|httptrace|"
        r"jolokia|logfile|loggers|threaddump|shutdown|restart|refresh|conditions|sessions|auditevents|caches|"
        r"scheduledtasks|integrationgraph|flyway|liquibase|startup|quartz|sbom)\b|/jolokia(?:[/\s?]|$)|/heapdump\b|"
        r"/\.well-known/security\.txt\.bak|/config\.php|"
        # ASP.NET's error and trace pages and its configuration (nikto's and nuclei's elmah/trace.axd/web.config
        # exposures), an IDE's project directory (JetBrains' .idea/workspace.xml names files and data sources)
        r"/elmah\.axd\b|/trace\.axd\b|/web\.config\b|/\.idea/|"
        r"/setup\.php|/install\.php|/shell\.php|/cmd\.php|/sftp-config|"
        r"\.(?:bak|old|swp|sql)(?:\?|$|\s)|\.[a-z0-9]{1,5}~(?:\?|$|\s)|"
        r"\s/(?:backups?|www|wwwroot|htdocs|public_html|site|web|website|db|database|dump|data|archive|old|"
        r"new|src|temp|tmp|test|files|admin|home|html|\d)\.(?:zip|rar|7z|tgz|tar|tar\.gz)(?:\?|$|\s)|"
        r"\s/backups?(?:[/?\s]|$)|/dump\.sql|/db\.sql|/_ignition/|"
        # more of nuclei's exposure templates and nikto's checks: Rails' and Laravel's secrets and logs, Symfony's
        # and Yii's debug panels, an Xdebug session, PHP's easter-egg ids, the GPON router RCE
        r"/config/(?:master\.key|database\.ya?ml|secrets\.ya?ml)|/storage/logs/laravel\.log|/_profiler/phpinfo|"
        r"/debug/default/view|[?&]xdebug_session_start=|\?=php[0-9a-f]{8}-[0-9a-f]{4}-|/gponform/|"
        # an out-of-band callback host of interactsh's public servers (nuclei's blind SSRF, XXE, RCE templates)
        r"\.oast\.(?:pro|live|site|online|fun|me)\b|\.interact\.sh\b"
    ),
    SOFTWARE_PROBE: (
        r"/wp-login\.php|/wp-admin|/xmlrpc\.php|/wp-content/plugins|/wp-includes|/phpmyadmin|/pma/|/myadmin|"
        r"/adminer|/solr/admin|/manager/html|\s/console/|/jmx-console|/invoker/|/owa/|/autodiscover|"
        r"/remote/login|/telescope|"
        # Spring Boot's actuator endpoints that monitoring reads on purpose (a site without Spring answers 4xx); not
        # /actuator/health, which load balancers' and Kubernetes' health checks ask for on any site they are told to
        r"/actuator/(?:info|metrics|prometheus)\b|"
        # PHP test pages scanners look for at the root, phpinfo() most often: names a PHP site may use for a page
        r"\s/(?:info|infos|test|i|pi|php|phptest|time)\.php(?:[\s?]|$)"
    ),
}
#: An open-proxy probe (category ``open_proxy``), matched at the start of the decoded request line: a ``CONNECT``
#: tunnel (nginx never opens one: it answers 400), or an absolute request line for an IP-echo or proxy-judge site or
#: a search engine, which a proxy would fetch (nginx serves its own site instead).  An absolute request line for any
#: other host is judged by :func:`absolute_host` against the site's own names once the whole log is read (see
#: ``access.own_hosts``): HTTP/1.1 clients may send the site's own host that way.
OPEN_PROXY = "open_proxy"
_PROXY_LINE = re.compile(
    rb"[ \t]*(?:connect[ \t]+[^ \t/]+:[0-9]{1,5}(?:[ \t]|$)|[a-z]+[ \t]+https?://(?:www\.)?"
    rb"(?:google\.[a-z.]+|bing\.com|baidu\.com|yahoo\.com|yandex\.ru|azenv\.net|httpbin\.org|ip-api\.com|ipinfo\.io|"
    rb"api\.ipify\.org|ifconfig\.(?:me|co)|icanhazip\.com|checkip\.amazonaws\.com|checkip\.dyndns\.org|"
    rb"whatismyip\.[a-z.]+|example\.(?:com|org|net)|proxyjudge\.[a-z.]+|wikipedia\.org)(?::[0-9]+)?(?:[/?# \t]|$))")
#: an absolute request line (RFC 9112 absolute-form): its host, without user info and port
_ABSOLUTE_LINE = re.compile(
    rb"[ \t]*[a-z][a-z-]{0,19}[ \t]+(?:https?|ftp|wss?)://(?:[^/?#@ \t]*@)?(\[[0-9a-f:.]*\]|[^/?#:@ \t\[\]]+)"
    rb"(?::[0-9]*)?(?:[/?# \t]|$)")
#: ``TRACE``/``TRACK`` (nikto's and nmap's http-methods check for cross-site tracing) and ``DEBUG`` (ASP.NET's
#: remote debugging, nikto's and nmap's http-methods checks): no browser sends them
_TRACE_LINE = re.compile(rb"[ \t]*(?:tra(?:ce|ck)|debug)[ \t]+[^ \t]+[ \t]+http/")
#: WebDAV's methods (RFC 4918), which scanners send to find a writable share (nikto, nmap's http-webdav-scan, davtest):
#: a probe only when answered as a site without WebDAV does (see :func:`counted_category`); a WebDAV site's clients
#: (Nextcloud's, a mounted share) send them all day.  Sources: nikto's and nmap's http-methods and http-webdav-scan
#: checks; the OWASP Core Rule Set's rule 911100 blocks every method but ``GET HEAD POST OPTIONS`` unless the site
#: lists its WebDAV methods (crs-setup.conf's ``tx.allowed_methods``), which the answer tells here
WEBDAV_PROBE = "webdav_probe"
_DAV_LINE = re.compile(rb"[ \t]*(?:propfind|proppatch|mkcol|copy|move|lock|unlock)[ \t]+[^ \t]+[ \t]+http/")
#: the answers of a WebDAV server that a site without one does not give: an authentication challenge (the share is
#: there), and WebDAV's own 409 Conflict, 412 Precondition Failed, 423 Locked and 424 Failed Dependency
_DAV_ANSWERS = frozenset({401, 409, 412, 423, 424})
#: the category prefix of an absolute request line for a host :data:`_PROXY_LINE` does not name: an open-proxy
#: probe unless the host is one of the site's own names, which only the whole log (its referers) or the job's
#: ``server_names`` tell — ``"absolute_uri:" + host``, resolved by the access summary
ABSOLUTE_URI = "absolute_uri:"
#: hosts that are always the server itself
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1", "localhost.localdomain"})


def absolute_host(category: str) -> str | None:
    """The host of an :data:`ABSOLUTE_URI` category, or None for any other category."""
    return category[len(ABSOLUTE_URI):] if category.startswith(ABSOLUTE_URI) else None


_ATTACK_RX = {k: re.compile(v.encode()) for k, v in ATTACK_PATTERNS.items()}
_ANY_ATTACK = re.compile(b"|".join(f"(?:{v})".encode() for v in ATTACK_PATTERNS.values()))
#: nginx's escapes in a logged value: ``\xHH`` (``escape=default``: quotes, backslashes, control and
#: non-ASCII bytes) and ``\"``, ``\\``, ``\u00HH`` (``escape=json``); both kinds never meet in one log
_NGINX_ESC = re.compile(rb"\\(?:x([0-9a-fA-F]{2})|u00([0-9a-fA-F]{2})|([\"\\]))")
#: percent-decodings at most: scanners encode payloads up to four times over (wfuzz's double_urlencode)
_DECODINGS = 4
#: IIS's ``%uHHHH`` (sqlmap's charunicodeencode tamper)
_PCT_U = re.compile(rb"%u([0-9a-fA-F]{4})")
#: overlong UTF-8 (``%c0%ae``, also the invalid ``%c0%2e``) and full-width forms of ``.``, ``/``, ``\``
_LOOKALIKE = re.compile(rb"\xc0[\xae.]|\xe0\x80\xae|\xef\xbc\x8e|\xc0[\xaf/]|\xe0\x80\xaf|\xef\xbc\x8f|"
                        rb"\xc1[\x9c\x1c]|\xef\xbc\xbc")
_LOOKALIKE_OF = {b"\xc0\xae": b".", b"\xc0.": b".", b"\xe0\x80\xae": b".", b"\xef\xbc\x8e": b".",
                 b"\xc0\xaf": b"/", b"\xc0/": b"/", b"\xe0\x80\xaf": b"/", b"\xef\xbc\x8f": b"/",
                 b"\xc1\x9c": b"\\", b"\xc1\x1c": b"\\", b"\xef\xbc\xbc": b"\\"}
#: an SQL comment stands for a blank (sqlmap's space2comment tamper: ``1/**/AND/**/2=2``)
_SQL_COMMENT = re.compile(rb"/\*[^*]{0,60}\*/")
#: MySQL's executable comments hide nothing: the opening ``/*!`` (with its version, ``/*!50000``) and the closing
#: ``*/`` stand for blanks and their content stays (sqlmap's versionedkeywords tampers: ``/*!UNION*//*!SELECT*/``,
#: ``/*!50000union*/``; halfversionedmorekeywords opens without closing: ``/*!0UNION/*!0ALL/*!0SELECT``)
_SQL_VERSIONED = re.compile(rb"/\*!\d{0,6}")
#: blanks SQL servers take that a pattern's ``\s`` does not: control bytes (sqlmap's space2mssqlblank tamper), a
#: lone ``%A0`` (space2mysqlblank; not one inside a UTF-8 character such as ``à``) and UTF-8's no-break space; and
#: a comment running to a newline, ``#…%0A`` or ``--…%0A`` (space2hash, space2dash: ``1%23xyz%0AAND%23xyz%0A2=2``)
_SQL_BLANKS = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f]|\xc2\xa0|(?<![\x80-\xbf\xc2-\xf4])\xa0|(?:#|--)[^\n]{0,60}\n")
_BLANK_HINT = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f\xa0]")


#: The pre-filter: a line none of these finds cannot match :data:`ATTACK_PATTERNS`, so only the
#: lines one of them finds are classified.  A cheap first pass over all distinct request lines
#: joined together and lower-cased; literal searches run at memchr speed, unlike one big
#: alternation.  It runs on the raw line, where the patterns see the decoded one: every line with
#: a ``%`` or a ``\\`` is kept (anything may be encoded or escaped; ``&&`` too: a command chained after a value), so it is enough that each
#: alternative of each pattern needs, in a line without them whose ``+`` became spaces, a character
#: or word below without blanks in it (``+`` and blanks differ between both forms).
#: ``_PREFILTER_OR`` and ``_PREFILTER_ORDER`` are the alternatives without such a literal: ``or 1=1``,
#: ``and 2>1``, ``order by 1--`` (``=``, blanks and ``or`` alone would let most lines through).  The
#: pattern texts must stay valid RE2 too (arrowscan runs them as one pattern, case-insensitive, on
#: the raw line), hence no ``\s`` (RE2's lacks ``\x0b``).  A hypothesis test checks all this
#: against every alternative of every pattern.
_PREFILTER_CHARS = re.compile(rb"[%'\"<>;$`(\\|~]|\.\.|/\.|/\*|&&")
_PREFILTER_OR = re.compile(rb"(?:(?:or|and|having)[\t\n\x0b\x0c\r +]+|&&[\t\n\x0b\x0c\r +]*)"
                           rb"(?:not[\t\n\x0b\x0c\r +]+)?-?[0-9]")
_PREFILTER_ORDER = re.compile(rb"order[\t\n\x0b\x0c\r +]+by")
_PREFILTER_WORDS = tuple(re.compile(re.escape(w)) for w in (
    b"union", b"select", b"sleep", b"benchmark", b"waitfor", b"information_schema", b"exec", b"@@",
    b"load_file", b"xp_cmd", b"dbms_pipe", b"utl_", b"ctxsys", b"etc/", b"proc/self", b"boot.ini",
    b"win.ini", b"c:/", b"javascript", b"vbscript", b"data:", b"onerror", b"onload", b"alert", b"cookie",
    b"document.", b"jndi", b"/bin/", b"cmd.exe",
    b"powershell", b"wp-", b"xmlrpc", b"phpmyadmin", b"pma/", b"myadmin", b"adminer", b"cgi-bin", b"phpunit",
    b"eval-stdin", b"actuator", b"/id_", b"phpinfo", b"web-inf", b"php:", b"file:", b"phar:", b"expect:", b"server-status", b"solr", b"hnap1", b"boaform", b"manager/html", b"console/",
    b"jmx-console", b"invoker", b"config.php", b"setup.php", b"install.php", b"shell.php", b"cmd.php", b"owa/",
    b"autodiscover", b"remote/login", b"sftp-config", b".bak", b".old", b".swp", b".sql", b".tar", b".zip",
    b".rar", b".7z", b".tgz", b"backup", b"ignition", b"telescope", b"oast.", b"interact.sh",
    b"jolokia", b"heapdump", b"server-info", b".axd", b"web.config", b"/.idea/", b"info.php", b"infos.php", b"test.php", b"/i.php", b"/pi.php", b"/php.php",
    b"time.php", b"phpversion", b"propfind", b"proppatch", b"mkcol", b"copy /", b"move /", b"lock /", b"debug /",
    b"169.254.169.254", b"100.100.100.200", b"fd00:ec2::254", b"metadata.google.internal",
    b"instance-data.ec2.internal", b"://", b"connect", b"classloader", b"java.lang.runtime@", b"memberaccess", b"config/", b"laravel.log", b"_profiler", b"debug/default", b"xdebug", b"?=php", b"gponform", b"trac",
))
_PREFILTERS = (_PREFILTER_CHARS, _PREFILTER_OR, _PREFILTER_ORDER, *_PREFILTER_WORDS)


def attack_categories(raws: list[bytes]) -> dict[int, str]:
    """index → category for the request lines that match an attack pattern."""
    if not raws:
        return {}
    buf = b"\n".join(raws).lower()
    starts = [0]
    for r in raws:
        starts.append(starts[-1] + len(r) + 1)
    candidates: set[int] = set()
    for rx in _PREFILTERS:
        pos = 0
        search = rx.search
        while True:
            m = search(buf, pos)
            if m is None:
                break
            i = bisect_right(starts, m.start()) - 1
            candidates.add(i)
            pos = starts[i + 1]
    out: dict[int, str] = {}
    for i in candidates:
        cat = attack_category(raws[i])
        if cat:
            out[i] = cat
    return out


def decode_request(raw_request: bytes) -> bytes:
    """The request line as the application sees it, lower-cased: nginx's log escapes undone, then ``+``
    as a blank, ``%uHHHH`` and percent-encoding decoded until nothing changes (double encoding and deeper), overlong UTF-8 and
    full-width ``.``/``/``/``\\`` as their ASCII form, SQL comments as blanks.

    Only a line with ``%`` or ``\\`` needs more than ``+`` → blank and lower-casing; the pre-filter
    keeps every such line."""
    low = raw_request.lower()
    if b"\\" in low:
        low = _NGINX_ESC.sub(_unescape, low)
    if b"%" in low or b"+" in low:
        low = low.replace(b"+", b" ")
        for _ in range(_DECODINGS):  # until nothing changes: double (and deeper) encoding
            if b"%" not in low:
                break
            if b"%u" in low:
                low = _PCT_U.sub(_unicode, low)
            dec = _unquote(low).lower()
            if dec == low:
                break
            low = dec
    if b"\xc0" in low or b"\xc1" in low or b"\xe0" in low or b"\xef" in low:
        low = _LOOKALIKE.sub(lambda m: _LOOKALIKE_OF[m.group()], low)
    if b"\n" in low or _BLANK_HINT.search(low):
        low = _SQL_BLANKS.sub(b" ", low)
    if b"/*" in low:
        if b"/*!" in low:
            low = _SQL_VERSIONED.sub(b" ", low)
            low = _SQL_COMMENT.sub(b" ", low).replace(b"*/", b" ")
        else:
            low = _SQL_COMMENT.sub(b" ", low)
    return low


def _unescape(m: re.Match[bytes]) -> bytes:
    hh = m.group(1) or m.group(2)
    return bytes((int(hh, 16),)) if hh else m.group(3)


def _unicode(m: re.Match[bytes]) -> bytes:
    return chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass")


def attack_category(raw_request: bytes) -> str | None:
    """The first attack category a request line matches, or None."""
    low = decode_request(raw_request)
    if not _ANY_ATTACK.search(low):
        if _PROXY_LINE.match(low):
            return OPEN_PROXY
        if _TRACE_LINE.match(low):
            return "scanner_probe"
        if _DAV_LINE.match(low):
            return WEBDAV_PROBE
        if (m := _ABSOLUTE_LINE.match(low)) is not None:
            host = m.group(1).rstrip(b".").decode("latin-1")
            return None if host in LOOPBACK_HOSTS else ABSOLUTE_URI + host
        return None
    for name, rx in _ATTACK_RX.items():
        if rx.search(low):
            return name
    return None  # pragma: no cover - _ANY_ATTACK matched one of them


#: the categories counted only for some answers (:func:`counted_category`)
CONDITIONAL_PROBES = frozenset({SOFTWARE_PROBE, WEBDAV_PROBE})
#: the categories that say a path was probed for, not that a payload was sent: none for a path the site serves on
#: purpose (the job's ``public_paths``)
PROBE_CATEGORIES = frozenset({"scanner_probe", SOFTWARE_PROBE, WEBDAV_PROBE})


def counted_category(category: str, status: int | None) -> str | None:
    """The category an attack line counts under, given the status it was answered with: a request for a
    path of software the site may run (:data:`SOFTWARE_PROBE`) counts as ``scanner_probe`` when answered
    4xx and not at all otherwise; a WebDAV method (:data:`WEBDAV_PROBE`) when answered 4xx or 501 but as a WebDAV
    server answers (401, 409, 412, 423, 424); every other category counts whatever the answer."""
    if category not in CONDITIONAL_PROBES:
        return category
    if category == WEBDAV_PROBE:
        return "scanner_probe" if status is not None and (400 <= status < 500 or status == 501) \
            and status not in _DAV_ANSWERS else None
    return "scanner_probe" if status is not None and 400 <= status < 500 else None


# ---------------------------------------------------------------------------------------------
# Sensitive files: a request for one answered 2xx with a body has likely handed out a secret
# ---------------------------------------------------------------------------------------------

#: name → (pattern over the path as nginx resolves it (:func:`nginx_uri`), lower-cased, without the query;
#: whether it holds secrets).  A curated subset of the OWASP Core Rule Set's restricted-files.data (rule
#: 930130) and of the files nuclei-templates' http/exposures probe for: files that are never meant to be
#: served and whose content is credentials or source (``secret``: a critical finding) or that disclose the
#: server's inside (a warning).  Files many sites publish on purpose (``package.json``, ``composer.lock``,
#: ``robots.txt``, release archives) are not in it, nor paths a site names as it likes (``/backup``).
SENSITIVE_FILES: dict[str, tuple[str, bool]] = {
    "dotenv": (r"/\.env(?:\.[a-z0-9_.-]+)?", True),  # .env, .env.local, .env.production, .env.bak
    "vcs": (r"/\.git/.*|/\.svn/(?:entries|wc\.db|.*\.svn-base)|/\.hg/.*|/\.bzr/.*", True),
    "credentials": (
        r"/\.git-credentials|/\.aws/.*|/\.s3cfg|/\.boto|/\.ssh/.*|/id_(?:rsa|dsa|ecdsa|ed25519)|/\.htpasswd|"
        r"/\.htdigest|/\.npmrc|/\.pypirc|/\.pgpass|/\.my\.cnf|/\.netrc|/\.docker/config\.json|/\.dockercfg|"
        r"/\.kube/config|/(?:credentials|secrets)\.json|/secrets\.ya?ml|/\.vscode/sftp\.json|/sftp-config\.json|"
        r"/\.ftpconfig|/\.remote-sync\.json|/\.(?:bash|zsh|sh|mysql|psql|php|python|rediscli)_history|"
        r"/config/(?:master\.key|database\.ya?ml|secrets\.ya?ml|credentials\.yml\.enc)", True),
    "database_dump": (r"/[^/]*\.(?:sql(?:\.(?:gz|bz2|xz|zst|zip|7z|rar|tar|tgz))?|sqlite3?)|/(?:dump|db|database)\.(?:db|dump)",
                      True),
    "site_backup": (r"/(?:backups?|www|wwwroot|htdocs|public_html|site|website|web|db|database|dump)"
                    r"\.(?:zip|rar|7z|tgz|tar|tar\.gz|tar\.bz2|tar\.xz)", True),
    # an application's configuration: executed by PHP it answers an empty body, so a body is its source
    "config_source": (r"/wp-config\.php(?:[._~-].*)?|/\.wp-config\.php\.swp|/app/etc/env\.php|/app/etc/local\.xml|"
                      r"/sites/default/settings\.php|/configuration\.php|"
                      r"/[a-z0-9_.-]+\.(?:php|inc|py|rb|conf|cnf|ini|ya?ml|json)(?:\.(?:bak|old|orig|save|swp|backup|"
                      r"tmp)|~)", True),
    "spring_actuator": (r"/actuator/(?:env|heapdump)", True),
    "aspnet_config": (r"/web\.config", True),  # connection strings, machine keys
    "aspnet_debug": (r"/(?:elmah|trace)\.axd(?:/.*)?", False),  # ELMAH's error log, ASP.NET's request trace
    "ide_project": (r"/\.idea/.*", False),  # JetBrains: file names, data sources
    # disclosures: the server's or the application's inside, not secrets as such
    "ds_store": (r"/\.ds_store", False),
    "htaccess": (r"/\.htaccess", False),
    "phpinfo": (r"/php[_-]?info\.php|/phpversion\.php", False),
    # the PHP test pages scanners look for at the root (phpinfo() most often): a PHP site may have such a page
    "php_test_page": (r"/(?:info|infos|test|i|pi|php|phptest|time)\.php", False),
    "server_status": (r"/server-(?:status|info)", False),  # Apache's mod_status/mod_info behind nginx
    "error_log": (r"/(?:error|debug|php_errors?)\.log|/storage/logs/laravel\.log", False),
}  # fmt: skip
#: the entries matched at the site's root only; every other one in any directory too (``/api/.env``,
#: ``/laravel/.env``, ``/wp-content/.git/config`` are probed as often as ``/.env``)
SENSITIVE_AT_ROOT = frozenset({"site_backup", "server_status", "php_test_page"})
_SENSITIVE_RX = re.compile(b"|".join(
    f"(?P<{n}>{'' if n in SENSITIVE_AT_ROOT else '(?:/.*)?'}(?:{rx}))".encode() for n, (rx, _s) in SENSITIVE_FILES.items()))
#: every pattern above needs one of these in the lower-cased raw line (or a ``%`` or ``\\``: anything may be
#: encoded or escaped); literal searches over all lines joined run at memchr speed
_SENSITIVE_WORDS = (
    b"/.", b".sql", b"id_", b"wp-config", b"phpinfo", b"info.php", b"phpversion", b"test.php", b"/i.php",
    b"infos.php", b"/pi.php", b"/php.php", b"time.php", b"env.php", b"settings.php", b"configuration.php", b"local.xml",
    b"credentials", b"secrets.", b"sftp", b"master.key", b"database.y", b"actuator/", b"server-", b".log", b"~",
    b".bak", b".old", b".orig", b".save", b".swp", b".backup", b".tmp", b".zip", b".rar", b".7z", b".tgz", b".tar",
    b".db", b".dump", b"web.config", b".axd",
)
_SENSITIVE_HINTS = tuple(re.compile(re.escape(w)) for w in (b"%", b"\\", *_SENSITIVE_WORDS))
_SENSITIVE_URI_HINTS = _SENSITIVE_HINTS[2:]  # the resolved path: decoded already
#: status pages a monitoring agent on the same host reads on purpose: answered to a loopback client, no finding
LOCAL_STATUS_FILES = frozenset({"server_status"})


def sensitive_file(uri: bytes) -> tuple[str, bool] | None:
    """(name, holds secrets) of the :data:`SENSITIVE_FILES` entry a resolved request path is, or None."""
    m = _SENSITIVE_RX.fullmatch(uri.lower())
    if m is None or m.lastgroup is None:
        return None
    return m.lastgroup, SENSITIVE_FILES[m.lastgroup][1]


def sensitive_requests(raws: list[bytes], candidates: Iterable[int] | None = None) -> dict[int, bytes]:
    """index → resolved path (:func:`nginx_uri`, lower-cased) of the request lines that ask for a sensitive file
    (``candidates``: the indexes where one of :data:`_SENSITIVE_HINTS` is found, when the caller has searched
    for them already, as the pyarrow path does in one RE2 pass)."""
    if not raws:
        return {}
    cands = sorted(_lines_with(raws, _SENSITIVE_HINTS) if candidates is None else candidates)
    uris = [nginx_uri(path).lower() for path in request_paths([raws[i] for i in cands])]
    return {cands[k]: uris[k] for k in sorted(_lines_with(uris, _SENSITIVE_URI_HINTS))
            if _SENSITIVE_RX.fullmatch(uris[k])}


def _lines_with(raws: list[bytes], patterns: tuple[re.Pattern[bytes], ...]) -> set[int]:
    """The indexes of the lines (lower-cased) in which one of ``patterns`` is found, in one pass per pattern over
    all of them joined (a line found is skipped by the rest of that pass)."""
    buf = b"\n".join(raws).lower()
    starts = [0]
    for r in raws:
        starts.append(starts[-1] + len(r) + 1)
    found: set[int] = set()
    for rx in patterns:
        pos = 0
        search = rx.search
        while (m := search(buf, pos)) is not None:
            i = bisect_right(starts, m.start()) - 1
            found.add(i)
            pos = starts[i + 1]
    return found


#: the paths of a site's front page: a catch-all (a single-page app's ``try_files $uri /index.html``) answers
#: every other path with the same body, so a sensitive path answered with that many bytes is no leak
FRONT_PAGES = frozenset({b"/", b"/index.html", b"/index.htm"})


#: what a browser loads for a page — styles, scripts, images, fonts, media: a page whose images are gone makes each
#: visitor's browser ask for all of them at once, 404 after 404 (CrowdSec's http-probing scenario leaves static
#: resources out for that reason).  Not archives, documents or source maps, which scanners look for.
PAGE_ASSET_EXTENSIONS = (
    b".css", b".js", b".mjs", b".jpg", b".jpeg", b".png", b".gif", b".ico", b".svg", b".webp", b".avif", b".bmp",
    b".tif", b".tiff", b".woff", b".woff2", b".ttf", b".otf", b".eot", b".mp4", b".webm", b".mp3", b".ogg",
)  # fmt: skip


def page_assets(raws: list[bytes]) -> set[bytes]:
    """The request lines of ``raws`` that ask (GET or HEAD) for a page asset (:data:`PAGE_ASSET_EXTENSIONS`, by the
    path without its query): never counted in a client's 404 burst."""
    out: set[bytes] = set()
    for raw, path in zip(raws, request_paths(raws), strict=True):
        if request_method(raw) in (b"GET", b"HEAD") and path.lower().endswith(PAGE_ASSET_EXTENSIONS):
            out.add(raw)
    return out


def path_matcher(patterns: list[str] | tuple[str, ...]) -> re.Pattern[bytes]:
    """Login paths: exact paths, ``*`` wildcards (``/auth/*``); the query string is ignored, and a trailing slash
    does not matter (``/admin/login`` is Django's ``/admin/login/`` too, and the other way round)."""
    if not patterns:
        return re.compile(rb"(?!)")
    alts = [re.escape(p.rstrip("/") if p.rstrip("/") else p).replace(r"\*", ".*")
            + ("/?" if p.rstrip("/") and not p.endswith("*") else "") for p in patterns]
    return re.compile(("(?:" + "|".join(alts) + ")").encode())
