"""security.nginx: the nginx configuration — server_tokens, ssl_protocols, autoindex, dotfiles.

The configuration is read the way nginx reads it: the main file and every ``include``
(globs, relative to the main file's directory), tokenized into a directive tree.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from upkeeper.config.targets import NginxTarget
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import ProcessError, TaskError
from upkeeper.tasks.security._common import CheckOutput

#: ssl_protocols default before nginx 1.23.4 (http://nginx.org/en/docs/http/ngx_http_ssl_module.html)
OLD_DEFAULT_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
NEW_DEFAULT_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
WEAK_PROTOCOLS = {"SSLv2": Severity.CRITICAL, "SSLv3": Severity.CRITICAL, "TLSv1": Severity.WARNING,
                  "TLSv1.1": Severity.WARNING}
DOTFILE_LOCATION = re.compile(r"/\\\.|\^/\\\.|/\.\*|\\\.(git|env|ht)")


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def children(self, name: str) -> list[Directive]:
        return [d for d in (self.block or []) if d.name == name]


@dataclass
class NginxConfig:
    root: list[Directive] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def walk(self, nodes: list[Directive] | None = None) -> list[Directive]:
        out: list[Directive] = []
        for d in self.root if nodes is None else nodes:
            out.append(d)
            if d.block:
                out.extend(self.walk(d.block))
        return out


def tokenize(text: str) -> list[tuple[str, int, bool]]:
    """(token, line, quoted) — quoted strings keep their content; '{', '}', ';' are tokens."""
    tokens: list[tuple[str, int, bool]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            tokens.append((c, line, False))
            i += 1
        elif c in "\"'":
            j, buf, start = i + 1, [], line
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ValueError(f"line {start}: unterminated quote")
            tokens.append(("".join(buf), start, True))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                if text[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                j += 1
            tokens.append((text[i:j], line, False))
            i = j
    return tokens


def parse(text: str, file: str, base_dir: Path, depth: int = 0, seen: set[str] | None = None,
          chain: tuple[str, ...] = ()) -> list[Directive]:
    """``seen`` collects every file read; ``chain`` is the files including this one (an include loop stops
    there).  A snippet included in several server blocks is parsed for each: nginx applies it in each."""
    tokens = tokenize(text)
    pos = 0
    seen = seen if seen is not None else set()
    chain = (*chain, file)

    def block(closing: bool) -> list[Directive]:
        nonlocal pos
        out: list[Directive] = []
        args: list[str] = []
        start_line = 0
        while pos < len(tokens):
            tok, line, quoted = tokens[pos]
            pos += 1
            if tok == "}" and not quoted:
                if args:
                    raise ValueError(f"{file}:{line}: unexpected '}}'")
                if not closing:
                    raise ValueError(f"{file}:{line}: unexpected '}}'")
                return out
            if tok == ";" and not quoted:
                if not args:
                    continue
                d = Directive(args[0], args[1:], file, start_line)
                if d.name == "include" and d.args and depth < 10:
                    out.extend(include(d.args[0]))
                else:
                    out.append(d)
                args = []
            elif tok == "{" and not quoted:
                if not args:
                    raise ValueError(f"{file}:{line}: block without a name")
                d = Directive(args[0], args[1:], file, start_line)
                d.block = block(True)
                out.append(d)
                args = []
            else:
                if not args:
                    start_line = line
                args.append(tok)
        if closing:
            raise ValueError(f"{file}: missing '}}'")
        if args:
            raise ValueError(f"{file}:{start_line}: directive without ';'")
        return out

    def include(pattern: str) -> list[Directive]:
        p = Path(pattern)
        pat = str(p if p.is_absolute() else base_dir / p)
        out: list[Directive] = []
        for f in sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else [pat]:
            if f in chain:
                continue
            seen.add(f)
            try:
                content = Path(f).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise ValueError(f"cannot read included file {f}: {exc.strerror}") from None
            out.extend(parse(content, f, base_dir, depth + 1, seen, chain))
        return out

    return block(False)


def load(path: str) -> NginxConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TaskError(f"cannot read nginx config {path}: {exc.strerror}",
                        "Try: set the target's 'config' to the main nginx.conf") from None
    seen = {str(p)}
    try:
        root = parse(text, str(p), p.parent, 0, seen)
    except ValueError as exc:
        raise TaskError(f"cannot parse nginx config: {exc}", "Try: 'nginx -t' shows the same problem") from None
    return NginxConfig(root, sorted(seen))


def nginx_version(binary: str) -> tuple[int, ...] | None:
    try:
        res = proc.run([binary, "-v"], timeout=10)
    except ProcessError:
        return None
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", res.stderr + res.text)
    return tuple(int(x) for x in m.groups()) if m else None


def _effective(name: str, server: Directive, http: Directive | None) -> Directive | None:
    own = server.children(name)
    if own:
        return own[-1]
    if http is not None and http.children(name):
        return http.children(name)[-1]
    return None


def _server_name(server: Directive) -> str:
    names = [a for d in server.children("server_name") for a in d.args]
    listens = [" ".join(d.args) for d in server.children("listen")]
    return f"server {names[0] if names else '_'} (listen {', '.join(listens) or '80'})"


def _is_tls(server: Directive, http: Directive | None) -> bool:
    if any("ssl" in d.args for d in server.children("listen")):
        return True
    ssl_on = _effective("ssl", server, http)
    return bool(ssl_on and ssl_on.args[:1] == ["on"])


def _denies(loc: Directive) -> bool:
    for d in loc.block or []:
        if d.name == "deny" and d.args[:1] == ["all"]:
            return True
        if d.name == "return" and d.args[:1] and d.args[0] in ("403", "404", "444"):
            return True
    return False


class NginxOptions(TaskOptions):
    config: str | None = Field(None, description="main configuration file (default: the target's config). "
            "Source: upkeeper (not set by default)")
    require_dotfile_rule: bool = Field(
        True, description="warn about server blocks with no location denying dotfiles. Source: upkeeper default"
    )


def check_nginx(config_path: str, binary: str, options: NginxOptions) -> CheckOutput:
    cfg = load(config_path)
    out = CheckOutput(metrics={"files": float(len(cfg.files))})
    version = nginx_version(binary)
    defaults = OLD_DEFAULT_PROTOCOLS if version is None or version < (1, 23, 4) else NEW_DEFAULT_PROTOCOLS
    https = [d for d in cfg.root if d.name == "http"]
    http = https[0] if https else None
    servers = [s for h in https for s in h.children("server")]
    out.metrics["servers"] = float(len(servers))
    for d in cfg.walk():
        if d.name == "autoindex" and d.args[:1] == ["on"]:
            out.findings.append(Finding(
                "security.nginx.autoindex", Severity.WARNING, d.where(),
                "autoindex on: directory listings are served", "remove 'autoindex on' (the default is off)",
                value="on", data={"file": d.file, "line": d.line}))
    for server in servers:
        label = _server_name(server)
        tokens = _effective("server_tokens", server, http)
        if tokens is None or tokens.args[:1] != ["off"]:
            out.findings.append(Finding(
                "security.nginx.server_tokens", Severity.WARNING, label,
                f"server_tokens is {tokens.args[0] if tokens else 'on (default)'}: the nginx version is disclosed "
                "in headers and error pages", "set 'server_tokens off;' in the http block",
                value=tokens.args[0] if tokens else "on", threshold="off",
                data={"where": tokens.where() if tokens else server.where()}))
        if _is_tls(server, http):
            prot = _effective("ssl_protocols", server, http)
            protocols = tuple(prot.args) if prot else defaults
            weak = [p for p in protocols if p in WEAK_PROTOCOLS]
            if weak:
                sev = max((WEAK_PROTOCOLS[p] for p in weak), key=lambda s: s.rank)
                out.findings.append(Finding(
                    "security.nginx.ssl_protocols", sev, label,
                    f"ssl_protocols allows {', '.join(weak)}"
                    + ("" if prot else f" (nginx {'.'.join(map(str, version or ()))} default)"),
                    "set 'ssl_protocols TLSv1.2 TLSv1.3;'", value=" ".join(protocols),
                    threshold="TLSv1.2 TLSv1.3", data={"where": prot.where() if prot else server.where()}))
        if options.require_dotfile_rule and not server.children("return"):
            locs = [d for d in cfg.walk(server.block or []) if d.name == "location"]
            guarded_ = any(DOTFILE_LOCATION.search(" ".join(loc.args)) and _denies(loc) for loc in locs)
            if not guarded_:
                out.findings.append(Finding(
                    "security.nginx.dotfiles", Severity.WARNING, label,
                    "no location denies hidden files (.env, .git …)",
                    "add: location ~ /\\.(?!well-known) { deny all; }", data={"where": server.where()}))
    out.summary = f"nginx config: {len(servers)} server block(s), {len(out.findings)} finding(s)"
    return out


@task
class SecurityNginx(Task[NginxOptions]):
    """Parse the nginx configuration (with its includes) and report server_tokens not off, weak
    ssl_protocols (TLS 1.0/1.1, SSLv3 — including nginx's own default before 1.23.4), autoindex on,
    and server blocks without a rule denying dotfiles."""

    name = "security.nginx"
    summary = "nginx configuration: server_tokens, ssl_protocols, autoindex, access to dotfiles"
    target_kinds = ("nginx",)
    Options = NginxOptions
    category = "security"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: NginxOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, NginxTarget)
        out = check_nginx(options.config or target.config, target.binary, options)
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)
