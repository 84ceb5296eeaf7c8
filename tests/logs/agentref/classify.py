"""REFERENCE COPY (tests only, frozen at cf01303): see tests/logs/agentref/__init__.py.

The user-agent part of upkeeper.logs.classify as it was: bots and scanners by user agent.  The request-line
decoding and attack patterns it uses for ``<category>_in_agent`` were not part of that change: they are the
module's own.
"""

from __future__ import annotations

import re

from upkeeper.logs.classify import _ATTACK_RX, decode_request

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
    ("w3af", r"w3af"), ("hydra", r"\bhydra\b"),  # CHANGED: a word (not Hydrangea)
    ("zmeu", r"zmeu|morfeus"), ("jorgee", r"jorgee"),
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
_SCANNER_RX = re.compile("|".join(f"(?P<{n}>{rx})" for n, rx in SCANNER_AGENTS).encode(), re.I)

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
    re.I,
)


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
    m = _SCANNER_RX.search(agent, 0, AGENT_CLASSIFIED_BYTES)
    if m:
        return m.lastgroup
    if _AGENT_HINT.search(agent, 0, AGENT_CLASSIFIED_BYTES):
        low = decode_request(agent[:AGENT_CLASSIFIED_BYTES])
        for cat in _AGENT_ATTACKS:
            if _ATTACK_RX[cat].search(low):
                return cat + "_in_agent"
    return None


def is_bot(agent: bytes) -> bool:
    """Crawlers, monitors, tools and scripts; an empty user agent (``-``) counts as a bot.  Only the first
    :data:`AGENT_CLASSIFIED_BYTES` are read."""
    a = agent.strip()
    if a in (b"-", b""):
        return True
    return bool(_BOT_RX.search(a, 0, AGENT_CLASSIFIED_BYTES)) or scanner_name(a) is not None
