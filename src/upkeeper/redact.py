"""Keep secrets out of logs, history, error messages and ``--json``.

Every secret value the configuration loads is registered here; :func:`redact`
replaces registered values and the password part of URLs / conninfo strings.
Everything upkeeper writes to history or prints passes through it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import shlex
import threading
from collections.abc import Sequence
from typing import Any

MASK = "***"
_MIN_LEN = 4  # shorter values would mangle ordinary text; such passwords are refused by nobody, but rare

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# The scheme (RFC 3986: a letter, then letters, digits, "+", "-", ".") is matched from the start of the run
# of scheme characters before "://" — its first letter, after any digits/"+-." — never from inside the run:
# a search that tried every position of a long run (a base64 blob, a hex string, a minified payload: 30 KB
# without a space) scanned the rest of the run from each, quadratic time (0.9 s for 30 KB, minutes for 1 MB).
# The scheme is kept verbatim, so the output is the same as with a scheme matched from its first letter.
_SCHEME = r"(?<![a-zA-Z0-9+.-])[0-9+.-]*+[a-zA-Z][a-zA-Z0-9+.-]*+://"
_URL_PASSWORD = re.compile(r"(?P<pre>" + _SCHEME + r"[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<post>@)")
# an example cut short in the middle of a URL's password (log examples are cut at a few hundred
# characters): "postgresql://app:s3cr" at the very end; an all-digit tail is taken for a port
_URL_PASSWORD_CUT = re.compile(r"(?P<pre>" + _SCHEME + r"[^:/@\s]*:)(?P<pw>(?!\d+$)[^@\s/]+)$")
_KV_PASSWORD = re.compile(
    # the word alone or in a snake-case name (db_password, aws_secret_access_key, STRIPE_API_KEY), which starts
    # where a word starts (so a long run of words is tried from its start only: linear time); "=>" too (Ruby's and
    # PHP's hashes: password => "…")
    r"(?P<pre>(?<![A-Za-z0-9_])(?:[A-Za-z0-9]+_)*"
    r"(?:password|passwd|pwd|secret|token|api_key|apikey|routing_key|integration_key)"
    r"(?:_[A-Za-z0-9]+)*\s*(?:=>|[=:](?!>))\s*)"
    # a bind placeholder (?, $1) is no secret: query fingerprints such as "where token = ?" stay as they are; nor is
    # MySQL's "Access denied for user 'app'@'localhost' (using password: YES)", which says whether one was given
    r"(?P<pw>'[^']*'|\"[^\"]*\"|(?!(?:\?|\$\d+)(?:[\s&,;)]|$)|(?-i:YES|NO)\))[^\s&,;]+)",
    re.IGNORECASE,
)
# a key in quotes or brackets whose name looks like a credential (sensitive_param): JSON and Python's dict repr
# ({"password": "…"}, {'client_secret': '…'}), PHP's arrays and print_r ('api_key' => '…', [password] => …); the
# quotes of a quoted value stay. A value that opens an object or a list is left alone
_KEY_QUOTED = re.compile(
    r"(?P<pre>(?:(?P<q>[\"'])(?P<name>[A-Za-z0-9_.\-]{1,80})(?P=q)|\[(?P<bname>[A-Za-z0-9_.\-]{1,80})\])"
    r"\s*(?:=>|[:=](?!>))\s*)"
    r"(?P<pw>\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|(?![{\[]|\*\*\*)[^\s,;}\])\"']+)")

# a dollar quote's tag: [A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*, written as the complement of each class
# (the same characters, with or without IGNORECASE: checked for every code point in tests/core/test_redact.py);
# a class with the range \x80-\uffff took re.compile ~40 ms, in every process at import
_TAG_START = r"[^\x00-\x40\[-\^`{-\x7f\U00010000-\U0010ffff]"
_TAG_CHAR = r"[^\x00-/:-@\[-\^`{-\x7f\U00010000-\U0010ffff]"
# SQL: CREATE/ALTER ROLE … PASSWORD 'literal' (also E'…', U&'…' and dollar-quoted $$…$$ / $tag$…$tag$, all of
# them string constants PostgreSQL takes as the password; a literal cut short masks the rest).  In a plain '…' a
# backslash may escape the quote after it (standard_conforming_strings off): the literal is taken to run on there
# (what follows it is masked too, at worst), as for the role statements' and pgcrypto's constants below — read as
# ending at that quote, the rest of such a password stayed
_SQL_PASSWORD = re.compile(
    r"(?P<pre>\bPASSWORD\s+)(?P<pw>(?:E?'(?:[^'\\]|\\[\s\S]|'')*\\?|U&'(?:[^']|'')*)(?:'|\Z)"
    r"|(?P<tag>\$(?:" + _TAG_START + _TAG_CHAR + r"*)?\$)[\s\S]*?(?:(?P=tag)|\Z))", re.IGNORECASE)
# … and the same plain '…' read as standard_conforming_strings on (the default) reads it, where a backslash escapes
# nothing: the mask runs to the farther of the two ends ('a\'' rest' is the password a\' rest there)
_SQL_PLAIN = re.compile(r"'(?:[^']|'')*(?:'|\Z)")
# SQL: pgcrypto's functions whose arguments are a password or a key — crypt('entered password', pswhash) as
# pgcrypto's documentation checks a login, pgp_sym_encrypt(data, 'key'), hmac(data, 'key', 'sha256') …: every
# string constant among the call's arguments (nested calls too: crypt('pw', gen_salt('bf'))) is masked
_SQL_CRYPTO = re.compile(r"\b(?:crypt|pgp_sym_(?:en|de)crypt(?:_bytea)?|pgp_pub_decrypt(?:_bytea)?|hmac"
                         r"|(?:en|de)crypt(?:_iv)?)\s*\(", re.IGNORECASE)
_SQL_CRYPTO_WORDS = ("crypt", "hmac")
_SQL_LITERAL = re.compile(r"(?:E|U&)?'(?:[^'\\]|\\[\s\S]|'')*(?:'|\Z)|[()]"
                          r"|(?P<tag>\$(?:" + _TAG_START + _TAG_CHAR + r"*)?\$)[\s\S]*?(?:(?P=tag)|\Z)", re.IGNORECASE)
# SQL: a role statement (CREATE/ALTER ROLE, USER or GROUP, up to its ";") — its string constants are its
# password, its VALID UNTIL time and the values it SETs; all but the last two are masked, so a password behind a
# misspelt keyword (``ALTER ROLE app PASSWRD 'pw'``: PostgreSQL logs the failed statement whole) is masked too
_SQL_ROLE = re.compile(r"\b(?:CREATE|ALTER)\s+(?:ROLE|USER|GROUP)\b", re.IGNORECASE)
_SQL_ROLE_TOKEN = re.compile(r"(?:E|U&)?'(?:[^'\\]|\\[\s\S]|'')*(?:'|\Z)|;|\"(?:[^\"]|\"\")*(?:\"|\Z)"
                             r"|(?P<tag>\$(?:" + _TAG_START + _TAG_CHAR + r"*)?\$)[\s\S]*?(?:(?P=tag)|\Z)",
                             re.IGNORECASE)
# what may stand before a constant of a role statement that is no secret: VALID UNTIL '…', SET name = '…' / TO '…', …
_SQL_ROLE_KEPT = re.compile(r"\bVALID\s+UNTIL\s*\Z", re.IGNORECASE)
_SQL_ROLE_SET = re.compile(r"\bSET\b", re.IGNORECASE)
_SQL_MAPPING = re.compile(r"\s+MAPPING\b", re.IGNORECASE)
_SQL_ROLE_WORDS = ("role", "user", "group")
# an age identity (X25519 "AGE-SECRET-KEY-1…", a plugin's "AGE-PLUGIN-YUBIKEY-1…") pasted where a public key
# belongs, and a PEM private key block (an SSH or TLS key pasted into a path field): the kind stays, the key goes
_AGE_IDENTITY = re.compile(r"(?P<pre>\bAGE-(?:SECRET-KEY|PLUGIN-[A-Z0-9]+)-1)(?P<pw>[0-9A-Za-z]+)")
_PEM_PRIVATE = re.compile(r"(?P<pre>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(?P<pw>[\s\S]*?)"
                          r"(?P<post>-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)")
# tokens known by their shape wherever they stand (an exception's message: "jwt malformed: eyJ…", a command line, a
# path): a JWT (its header and claims are base64 of JSON objects, "eyJ"; an unsigned one, "alg": "none", ends with
# its dot), GitHub's, GitLab's and Slack's tokens,
# Stripe's secret, restricted and webhook keys, Google's API keys, npm's tokens, OpenAI's and Anthropic's keys (the
# vendor's prefix stays, to tell what leaked), and an AWS access key id
_KNOWN_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:(?P<jwt>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
    r"|(?P<pre>gh[pousr]_|github_pat_|glpat-|xox[abposre]-|xapp-|(?:sk|rk)_(?:live|test)_|whsec_|AIza|npm_"
    r"|sk-(?:proj-|ant-(?:api\d\d-)?)?)(?P<pw>[A-Za-z0-9_-]{16,})"
    r"|(?P<aws>(?:AKIA|ASIA)[0-9A-Z]{16})(?![A-Za-z0-9]))")
_TOKEN_HINTS = ("eyJ", "gh", "glpat-", "xox", "xapp-", "_live_", "_test_", "whsec_", "AIza", "npm_", "sk-", "AKIA",
                "ASIA")
# the prefixes whose tokens are letters and digits only
_ALNUM_TOKENS = frozenset(("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "npm_", "sk_live_", "sk_test_", "rk_live_",
                           "rk_test_", "whsec_"))
# a command line's credential option followed by its value on the same line (``--password hunter2``,
# ``--client_secret x``; ``--password=…`` is a pair); a flag that takes no value (``pg_dump --no-password mydb``,
# ``--ask-vault-password site.yml``, ``--skip-password``) is followed by an argument of its own
_CLI_PASSWORD = re.compile(r"(?P<pre>(?<![\w-])--(?!(?:no|skip|without|with|ask|prompt|disable|enable|ignore|allow"
                           r"|require|use|show|print)[-_])(?:[a-z]+[-_])*"
                           r"(?:password|passwd|token|secret|api[-_]?key)[ \t]+)"
                           r"(?P<pw>(?!-)[^\s'\"]+|'[^']*'|\"[^\"]*\")", re.IGNORECASE)
# a URL's query parameter whose name looks like a credential: ?access_token=…, &X-Amz-Signature=…
_QUERY_PARAM = re.compile(r"(?P<pre>[?&;](?P<name>[A-Za-z0-9_.\-\[\]]{1,80})=)(?P<pw>[^&#\s\"'<>;]+)")
# the same inside a percent-encoded URL (a redirect target: ?next=%2Freset%3Ftoken%3D…)
_QUERY_PARAM_ENCODED = re.compile(
    r"(?P<pre>(?:%3[Ff]|%26|%3[Bb])(?P<name>[A-Za-z0-9_.\-]{1,80})%3[Dd])(?P<pw>(?:(?!%26|%23)[^&#\s\"'<>;])+)")
# a parameter name containing one of these is sensitive (access_token, client_secret, apikey)
_PARAM_STRONG = ("token", "secret", "passw", "apikey", "api_key", "signature", "credential", "sessid",
                 "sessionid", "privatekey", "private_key")
# … or having one of these as a word of its name (key, api-key, sessionKey, sig, auth, pwd), but not
# merely containing it: keyword, author, passenger stay visible
_PARAM_WORDS = frozenset({"key", "sig", "auth", "pass", "pwd", "pw", "session", "jwt", "otp", "sid",
                          "passcode", "pin"})
_NAME_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# an OAuth 2.0 authorization code (RFC 6749 § 4.1.2: ``/callback?code=…&state=…``, also ``auth_code``,
# ``device_code``) is a credential until redeemed; a short value (``?code=US``, ``?code=404``) is not one
_CODE_WORDS = frozenset({"code"})
_CODE_MIN_LEN = 16
# HTTP authentication (RFC 9110 § 11): "Basic <base64 of user:password>" (RFC 7617) is masked when the
# value decodes to text with a colon — so "Basic authentication" stays; "Bearer <token>" (RFC 6750) and
# the other token schemes when the value looks like a token (see _token_like): "Bearer tokens" stays
_AUTH_BASIC = re.compile(r"(?P<pre>\bBasic\s+)(?P<pw>[A-Za-z0-9+/]{2,}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)
_AUTH_TOKEN = re.compile(
    r"(?P<pre>\b(?:Bearer|Token|ApiKey|Negotiate|NTLM)\s+)(?P<pw>[A-Za-z0-9\-._~+/]+=*)(?![A-Za-z0-9\-._~+/=])",
    re.IGNORECASE)
# Digest (RFC 7616): the response is a hash of the password (crackable offline); also as nginx logs it,
# with its quotes escaped (response=\x22…\x22)
_DIGEST_RESPONSE = re.compile(r'(?P<pre>\bresponse\s*=\s*(?:"|\\x22)?)(?P<pw>[0-9A-Fa-f]{16,})', re.IGNORECASE)
# the value of a header named Authorization, whatever it looks like ("Authorization: sk-live-…",
# {'Authorization': 'Bearer …'}); a Digest header is left to _DIGEST_RESPONSE
_SCHEMES = r"(?:Basic|Bearer|Token|ApiKey|Negotiate|NTLM|OAuth)"
_AUTH_HEADER = re.compile(
    r"(?P<pre>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:" + _SCHEMES + r"\s+)?)"
    r"(?P<pw>(?!\*\*\*|Digest\b|" + _SCHEMES + r"\b)[^\s,;\"'&]+)", re.IGNORECASE)
_AUTH_WORDS = ("basic", "bearer", "token", "apikey", "negotiate", "ntlm", "authorization")
# a cookie ``name=value`` (RFC 6265) whose name looks like a credential (sessionid, PHPSESSID, auth_token):
# masked where it is a cookie — the start of the text or of a quoted field, after "; " or "Cookie: ",
# or followed by ";" — so "tests pass=3 fail=0" stays as it is
_COOKIE_PAIR = re.compile(r"(?<![^\s\"';:])(?P<name>[A-Za-z0-9_.\-\[\]]{1,80})=(?P<pw>\"[^\"]*\"|[^;\s\"',&]+)")


# PHP writes a stack frame's arguments (``#0 /var/www/db.php(5): PDO->__construct('mysql:host=loca...', 'app',
# 'secret', Array)``: in traces of uncaught exceptions, Laravel's and Monolog's stack traces) unless
# zend.exception_ignore_args is on — off without a php.ini, as in the official Docker images — and PHP before 8.2
# has no SensitiveParameter: the password argument of the calls that take one (its position counted from 0) is
# masked. PHP writes a string argument between quotes without escaping them, cut to 15 characters and "..."
_PHP_ARG = r"(?:'[^\n]*?'(?=, |\))|[^,()'\n]*(?:\([^()\n]*\))?)"
_PHP_CREDENTIAL_CALLS = {
    2: r"(?:(?<!\w)\w*PDO\w*|mysqli)(?:->|::)__construct|mysqli(?:->|::)(?:real_)?connect|\bmysqli_connect"
       r"|\bldap_bind(?:_ext)?|\bftp_login|\bssh2_auth_password|\bimap_open|(?:->|::)createPdoConnection",
    3: r"\bmysqli_real_connect",
}
_PHP_FRAME_PASSWORD = [
    re.compile(r"(?P<pre>(?:" + calls + r")\((?:" + _PHP_ARG + r", ){" + str(n) + r"}')(?P<pw>[^\n]*?)(?P<post>'(?=, |\)))")
    for n, calls in _PHP_CREDENTIAL_CALLS.items()]
_PHP_CALL_WORDS = ("__construct", "connect", "ldap_bind", "ftp_login", "ssh2_auth_password", "imap_open")

# Redis commands whose arguments hold a password: AUTH [user] pass, HELLO v AUTH user pass, MIGRATE … AUTH pass /
# AUTH2 user pass, CONFIG SET requirepass|masterauth|tls-*-pass value, ACL SETUSER name >pass / <pass / #hash
_REDIS_SECRET_CONFIG = frozenset({"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass"})


def redis_command_secrets(argv: Sequence[str]) -> list[str]:
    """The arguments of the Redis command ``argv`` that are passwords (or password hashes)."""
    if not argv:
        return []
    cmd, args = argv[0].upper(), list(argv[1:])
    if cmd == "AUTH":
        return args[-1:]
    out: list[str] = []
    if cmd in ("HELLO", "MIGRATE"):
        for i, a in enumerate(args):
            if a.upper() == "AUTH":
                out += args[i + 1 + (cmd == "HELLO"):i + 2 + (cmd == "HELLO")]
            elif a.upper() == "AUTH2" and cmd == "MIGRATE":
                out += args[i + 2:i + 3]
    elif cmd == "CONFIG" and args[:1] and args[0].upper() == "SET":
        pairs = args[1:]
        out += [pairs[i + 1] for i in range(0, len(pairs) - 1, 2) if pairs[i].lower() in _REDIS_SECRET_CONFIG]
    elif cmd == "ACL" and args[:1] and args[0].upper() == "SETUSER":
        out += [r for r in args[2:] if r[:1] in "><#!" and len(r) > 1]
    return out


def redact_redis_command(argv: Sequence[str]) -> str:
    """``argv`` as a command line (shell-quoted) with its password arguments masked (``AUTH user ***``,
    ``ACL SETUSER bob on >***``), and what :func:`redact` masks."""
    hidden = set(redis_command_secrets(argv))
    acl = bool(argv) and argv[0].upper() == "ACL"
    return redact(" ".join((a[0] + MASK if acl and a[:1] in "><#!" else MASK) if a in hidden else shlex.quote(a)
                           for a in argv))


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears."""
    global _pattern
    if not value or len(value) < _MIN_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def clear_secrets() -> None:
    """Forget all registered secrets (tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


class Redacted(str):
    """A text its producer already redacted part by part: a located config problem, its location
    (``file:4: targets -> db -> password``) and its message (``environment variable NOPE is not set``) apart.
    Joined, the rules would read the message's first word as the password (``password: *** variable NOPE …``);
    :func:`redact` masks only the registered secrets in it, and :class:`RedactingFilter` leaves such a log
    argument as it is.  Anything built from it (an f-string, a concatenation) is a plain ``str`` again."""

    __slots__ = ()


def redact(text: str) -> str:
    """Mask registered secrets, URL passwords, ``password=…`` pairs, the values of credential-like URL
    query parameters (``?access_token=…``, ``&sig=…``) and cookies (``sessionid=…``), HTTP credentials
    (``Basic …``, ``Bearer …``, Digest responses, ``Authorization: …``), SQL ``PASSWORD '…'`` literals, the password
    argument of a PHP stack frame (``PDO->__construct('mysql:…', 'app', '…')``), age
    identities (``AGE-SECRET-KEY-1…``), PEM private keys, tokens of a known shape (a JWT, ``ghp_…``, ``sk_live_…``,
    ``AKIA…``: see :data:`_KNOWN_TOKEN`) and ``--password VALUE`` in ``text``; the other constants of a role statement
    (``ALTER ROLE app PASSWRD '…'``) and the arguments of pgcrypto's password and key functions too."""
    if not text:
        return text
    pat = _pattern
    if isinstance(text, Redacted):  # the rules were applied part by part; a secret registered since is masked
        return text if pat is None else Redacted(pat.sub(MASK, text))
    if pat is not None:
        text = pat.sub(MASK, text)
    if "://" in text and "@" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
    if "AGE-" in text:
        text = _AGE_IDENTITY.sub(lambda m: m.group("pre") + MASK, text)
    if "PRIVATE KEY-----" in text:
        text = _PEM_PRIVATE.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
    if "://" in text:
        text = _URL_PASSWORD_CUT.sub(lambda m: m.group("pre") + MASK, text)
    low = text.lower()
    if any(w in low for w in _AUTH_WORDS):  # most texts have none: three case-blind regexes skipped
        text = _AUTH_BASIC.sub(_basic, text)
        text = _AUTH_TOKEN.sub(_token, text)
        text = _AUTH_HEADER.sub(lambda m: m.group("pre") + MASK, text)
    text = _KV_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    if any(h in text for h in _TOKEN_HINTS):
        text = _KNOWN_TOKEN.sub(_known_token, text)
    if "--" in text:
        text = _CLI_PASSWORD.sub(lambda m: m.group("pre") + MASK, text)
    if "\"" in text or "'" in text or "]" in text:
        text = _KEY_QUOTED.sub(_key_quoted, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_query_param, text)
        text = _COOKIE_PAIR.sub(_cookie_pair, text)
        text = _DIGEST_RESPONSE.sub(lambda m: m.group("pre") + MASK, text)
    if "%3" in text:
        text = _QUERY_PARAM_ENCODED.sub(_query_param, text)
    if "'" in text or "$" in text:
        text = _mask_sql_passwords(text)
    if ("'" in text or "$" in text) and any(w in low for w in _SQL_ROLE_WORDS):
        text = _mask_role_literals(text)
    if ("'" in text or "$" in text) and "(" in text and any(w in low for w in _SQL_CRYPTO_WORDS):
        text = _mask_crypto_args(text)
    if "'" in text and any(w in low for w in _PHP_CALL_WORDS):
        for rx in _PHP_FRAME_PASSWORD:
            text = rx.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)
    return text


def _mask_sql_passwords(text: str) -> str:
    """Each PASSWORD's constant (:data:`_SQL_PASSWORD`) masked; a plain '…' one up to the farther of its ends with
    and without backslash escapes (:data:`_SQL_PLAIN`): which one PostgreSQL took depends on a setting."""
    out: list[str] = []
    pos = 0
    while (m := _SQL_PASSWORD.search(text, pos)) is not None:
        end = m.end()
        if m.group("pw")[:1] == "'":
            plain = _SQL_PLAIN.match(text, m.start("pw"))
            if plain is not None:
                end = max(end, plain.end())
        out.append(text[pos:m.start()] + m.group("pre") + MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _mask_role_literals(text: str) -> str:
    """The string constants of each role statement (:data:`_SQL_ROLE`) up to its ``;`` (or the end: an example cut
    short) masked, but VALID UNTIL's (:data:`_SQL_ROLE_KEPT`) and those after SET; quoted names stay."""
    out: list[str] = []
    pos = 0
    while (m := _SQL_ROLE.search(text, pos)) is not None:
        out.append(text[pos:m.end()])
        i = m.end()
        # past SET: the values of a setting (TO 'a', 'b'); a user mapping's options (SET password '…') are its credentials
        setting, mapping = False, _SQL_MAPPING.match(text, i) is not None
        while (lit := _SQL_ROLE_TOKEN.search(text, i)) is not None:
            before = text[i:lit.start()]
            out.append(before)
            i = _constant_end(text, lit)
            tok = text[lit.start():i]
            if tok == ";":
                out.append(tok)
                break
            setting = setting or (not mapping and _SQL_ROLE_SET.search(before) is not None)
            if tok[:1] == '"' or setting or _SQL_ROLE_KEPT.search(before):  # a quoted name, or no secret
                out.append(tok)
            elif (tag := lit.group("tag")) is not None:
                out.append(tag + MASK + (tag if len(tok) >= 2 * len(tag) and tok.endswith(tag) else ""))
            else:
                out.append(tok[:tok.index("'")] + "'" + MASK + ("'" if len(tok) > 1 and tok.endswith("'") else ""))
        else:
            out.append(text[i:])
            return "".join(out)
        pos = i
    out.append(text[pos:])
    return "".join(out)


def _constant_end(text: str, lit: re.Match[str]) -> int:
    """Where the token :data:`_SQL_ROLE_TOKEN` or :data:`_SQL_LITERAL` found ends: a plain '…' constant, read with
    backslash escapes there, at the farther of that end and its end without them (:data:`_SQL_PLAIN`)."""
    if lit.group()[:1] != "'":
        return lit.end()
    plain = _SQL_PLAIN.match(text, lit.start())
    return max(lit.end(), plain.end()) if plain is not None else lit.end()


def _mask_crypto_args(text: str) -> str:
    """The string constants among the arguments of each pgcrypto call that takes a password or key
    (:data:`_SQL_CRYPTO`), up to its closing parenthesis (or the end: an example cut short), masked."""
    out: list[str] = []
    pos = 0
    while (m := _SQL_CRYPTO.search(text, pos)) is not None:
        out.append(text[pos:m.end()])
        depth, i = 1, m.end()
        while depth and (lit := _SQL_LITERAL.search(text, i)) is not None:
            tok = text[lit.start():_constant_end(text, lit)]
            out.append(text[i:lit.start()])
            if tok == "(":
                depth += 1
                out.append(tok)
            elif tok == ")":
                depth -= 1
                out.append(tok)
            elif (tag := lit.group("tag")) is not None:  # a dollar-quoted constant: crypt($$pw$$, …)
                out.append(tag + MASK + (tag if len(tok) >= 2 * len(tag) and tok.endswith(tag) else ""))
            else:
                out.append(tok[:tok.index("'")] + "'" + MASK + ("'" if len(tok) > 1 and tok.endswith("'") else ""))
            i = lit.start() + len(tok)
        if depth:  # cut short inside the call: no constant left (the last one ran to the end)
            out.append(text[i:])
            return "".join(out)
        pos = i
    out.append(text[pos:])
    return "".join(out)


def sensitive_param(name: str, value: str = "") -> bool:
    """Does a URL query parameter called ``name`` (with ``value``) look like it carries a credential?"""
    low = name.lower()
    if any(s in low for s in _PARAM_STRONG):
        return True
    words = {w.lower() for w in _NAME_WORD.findall(name)}
    if words & _PARAM_WORDS:
        return True
    return bool(words & _CODE_WORDS) and len(value) >= _CODE_MIN_LEN


def _key_quoted(m: re.Match[str]) -> str:
    pw = m.group("pw")
    # (without the value: a long "code" under a key is an error's code — pino's err.code ERR_HTTP_HEADERS_SENT, AWS's
    # ProvisionedThroughputExceededException — far more often than an OAuth code)
    if not sensitive_param(m.group("name") or m.group("bname") or "") or pw.strip("\"'") == MASK:
        return m.group(0)
    return m.group("pre") + (pw[0] + MASK + pw[-1] if pw[0] in "\"'" else MASK)


def _query_param(m: re.Match[str]) -> str:
    return m.group("pre") + MASK if sensitive_param(m.group("name"), m.group("pw")) else m.group(0)


def _basic(m: re.Match[str]) -> str:
    """``Basic <base64>``: masked when the value is base64 of ``user:password`` — UTF-8 text without control
    characters, with a colon.  An empty user name needs a password of 4+ characters: short words such as
    "On", "One" and "Only" decode to ":…"."""
    value = m.group("pw")
    try:
        plain = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return m.group(0)
    if ":" not in plain or (plain[0] == ":" and len(plain) < 5) or any(c < " " or c == "\x7f" for c in plain):
        return m.group(0)
    return m.group("pre") + MASK


def _token_like(value: str) -> bool:
    """Does the word after ``Bearer``/``Token`` look like a token rather than prose ("Bearer tokens",
    "Token expired.")?  20+ characters, or 4+ with a digit, a token symbol, an inner dot (a JWT) or a
    capital letter after the first character."""
    if len(value) >= 20:
        return True
    body = value.rstrip(".")
    return len(body) >= 4 and (any(c.isdigit() or c in "-_~+/=" for c in body) or "." in body
                               or any(c.isupper() for c in body[1:]))


def _token(m: re.Match[str]) -> str:
    return m.group("pre") + MASK if _token_like(m.group("pw")) else m.group(0)


def _known_token(m: re.Match[str]) -> str:
    """A token of a known shape (:data:`_KNOWN_TOKEN`) masked, its vendor's prefix kept; after the looser prefixes
    (``sk-``, ``npm_``, ``AIza``) only a value with both letters and digits, as keys are (``sk-learn-style-words``
    are words); GitHub's ``gh?_``, Stripe's and npm's tokens are letters and digits only (``sk_test_suite_of_x`` is
    a name); after a bare ``sk-`` a value with ``-`` or ``_`` in it is a key only from 32 characters on (OpenAI's
    ``sk-svcacct-…``; a host ``sk-prod-db01-replica-2`` stays)."""
    if m.group("jwt") or m.group("aws"):
        return MASK
    pre, value = m.group("pre"), m.group("pw")
    if pre in ("sk-", "npm_", "AIza") and not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return m.group(0)
    if pre in _ALNUM_TOKENS and not value.isalnum():  # npm_config_… is a setting, sk_test_… or ghs_… a name
        return m.group(0)
    if pre == "sk-" and len(value) < 32 and not value.isalnum():
        return m.group(0)
    return pre + MASK


def _cookie_pair(m: re.Match[str]) -> str:
    name, value = m.group("name"), m.group("pw")
    if value == MASK or not sensitive_param(name, value):
        return m.group(0)
    start, text = m.start(), m.string
    before = text[max(0, start - 80):start].rstrip(" \t")
    if (start == 0 or text[start - 1] in "\"';" or before.endswith(";") or before.lower().endswith("cookie:")
            or text.startswith(";", m.end())):
        return name + "=" + MASK
    return m.group(0)


def redact_obj(obj: Any) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the final message of every record; an argument that is :class:`Redacted`
    is left as it is (unless the rest of the message masks its place: ``password: %s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        kept: list[Redacted] = []
        if isinstance(args, tuple) and any(isinstance(a, Redacted) for a in args):
            # each Redacted argument stands in the message as a placeholder no rule reads as a secret
            def hold(a: object) -> object:
                if not isinstance(a, Redacted):
                    return a
                kept.append(a)
                return f"\x00{len(kept) - 1}\x00"

            record.args = tuple(hold(a) for a in args)
        try:
            msg = record.getMessage()
        except Exception:
            record.args = args
            return True
        msg = redact(msg)
        for i, a in enumerate(kept):
            msg = msg.replace(f"\x00{i}\x00", redact(a))
        record.msg = msg
        record.args = None
        return True
