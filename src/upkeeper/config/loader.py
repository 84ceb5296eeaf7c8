"""Load ``upkeeper.yaml``: YAML with line numbers, ``${ENV}`` interpolation, ``*_file`` secrets.

Every problem becomes a :class:`~upkeeper.errors.ConfigProblem` that names the
file, the line and the field path (``jobs -> db-backup -> options -> jobs``),
and says how to fix it.  Nothing here ever lets a traceback reach the user.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from upkeeper.config.locate import CONFIG_ENV, locate_config
from upkeeper.config.models import Config
from upkeeper.errors import ConfigError, ConfigProblem
from upkeeper.redact import register_secret

Path_ = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")



class LineMap:
    """Maps a field path in the parsed YAML to the line (1-based) where it is written.

    Built from the text alone, it parses it with line tracking only when a line is first asked
    for — that is, only when there is a problem to report.
    """

    def __init__(self, root: Any, file: str, text: str | None = None) -> None:
        self._root = root
        self.file = file
        self._text = text

    @property
    def root(self) -> Any:
        if self._root is None and self._text is not None:
            text, self._text = self._text, None
            try:
                self._root = parse_yaml(text, self.file, locate=True)[1]._root
            except ConfigError:
                self._root = CommentedMap()
        return self._root

    def __getstate__(self) -> dict[str, Any]:
        # Configs travel to worker processes; line numbers are only needed where the file was read.
        return {"_root": None, "file": self.file, "_text": None}

    def line(self, path: Sequence[str | int]) -> int | None:
        node = self.root
        line: int | None = None
        for seg in path:
            if isinstance(node, CommentedMap):
                if seg in node:
                    try:
                        line = node.lc.key(seg)[0] + 1
                    except (KeyError, TypeError, AttributeError):
                        pass
                    node = node[seg]
                    continue
                return line if line is not None else self._node_line(node)
            if isinstance(node, CommentedSeq) and isinstance(seg, int) and 0 <= seg < len(node):
                try:
                    line = node.lc.item(seg)[0] + 1
                except (KeyError, TypeError, AttributeError):
                    pass
                node = node[seg]
                continue
            break
        return line

    @staticmethod
    def _node_line(node: Any) -> int | None:
        lc = getattr(node, "lc", None)
        return (lc.line + 1) if lc is not None and lc.line is not None else None

    def value_at(self, path: Sequence[str | int]) -> Any:
        node = self.root
        for seg in path:
            try:
                node = node[seg]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def problem(self, path: Path_, message: str, hint: str | None = None) -> ConfigProblem:
        return ConfigProblem(message=message, path=tuple(path), file=self.file, line=self.line(path), hint=hint)


def find_config(explicit: str | Path | None) -> Path:
    """Resolve which config file to use: --config, $UPKEEPER_CONFIG, ./upkeeper.yaml, /etc/upkeeper."""
    path, named = locate_config(explicit)
    if path is not None:
        return path
    if named == "option":
        raise ConfigError(
            f"config file {Path(str(explicit)).expanduser()} does not exist",
            "Try: 'upkeeper init' to write one, or pass --config PATH",
        )
    if named == "env":
        env = os.environ.get(CONFIG_ENV, "")
        raise ConfigError(f"config file {Path(env).expanduser()} (from ${CONFIG_ENV}) does not exist",
                          f"Try: fix or unset {CONFIG_ENV}")
    raise ConfigError(
        "no config file found (looked for ./upkeeper.yaml and /etc/upkeeper/upkeeper.yaml)",
        "Try: 'upkeeper init' to write one, or pass --config PATH",
    )


def parse_yaml(text: str, file: str, *, locate: bool = True) -> tuple[Any, LineMap]:
    """Parse YAML 1.2.  ``locate=False`` uses the fast C-backed loader (no line numbers)."""
    yaml = YAML(typ="rt") if locate else YAML(typ="safe", pure=False)
    yaml.allow_duplicate_keys = False
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = (exc.problem or exc.context or "invalid YAML").strip()
        hint = _unquoted_hint(text, line) or "Try: check indentation (spaces, not tabs) and quoting around this line"
        if "duplicate key" in str(exc):
            what = "duplicate key " + _dup_key(str(exc))
            hint = ("Try: keep one of them (a key appears once in a mapping), or check the indentation: "
                    "is one of them meant to be inside another entry?")
        raise ConfigError.from_problems(
            [ConfigProblem(message=f"YAML syntax error: {what}", file=file, line=line, hint=hint)]
        ) from None
    except YAMLError as exc:
        raise ConfigError.from_problems(
            [ConfigProblem(message=f"YAML syntax error: {exc}", file=file, hint="Try: check the file is valid YAML")]
        ) from None
    except Exception as exc:  # ruamel raises a few non-YAMLError exceptions on odd input
        raise ConfigError.from_problems(
            [ConfigProblem(message=f"cannot parse YAML: {exc}", file=file, hint="Try: check the file is valid YAML")]
        ) from None
    return root, LineMap(root, file)


# "key: VALUE" (or "- VALUE") whose value starts with a character YAML reserves: '*' (an alias: a cron
# expression such as */5 * * * *), '@' (@daily) or '`'
_RESERVED_START = re.compile(r"^(?P<pre>\s*(?:-\s+)?(?:[^\s#'\"{\[][^:#]*:\s+)?)(?P<value>[*@`][^#]*?)\s*(?:\s#.*)?$")


def _unquoted_hint(text: str, line: int | None) -> str | None:
    """A hint to quote the value of ``line`` when it starts with a character YAML reserves (a syntax error then,
    whose own message — "expected alphabetic or numeric character" — says nothing of quoting)."""
    lines = text.splitlines()
    if line is None or not 0 < line <= len(lines):
        return None
    m = _RESERVED_START.match(lines[line - 1])
    if m is None:
        return None
    value = m.group("value")
    quoted = f"'{value}'" if '"' in value else f'"{value}"'
    return (f"Try: quote the value — YAML reads a value starting with {value[0]!r} as syntax, not text: "
            f"{m.group('pre').strip()} {quoted}".rstrip())


def _dup_key(text: str) -> str:
    m = re.search(r'found duplicate key "([^"]*)"', text)
    return repr(m.group(1)) if m else ""


def interpolate(node: Any, lines: LineMap, problems: list[ConfigProblem], path: Path_ = ()) -> Any:
    """Return a plain-Python copy of ``node`` with ``${VAR}`` / ``${VAR:-default}`` substituted."""
    if isinstance(node, Mapping):
        out: dict[Any, Any] = {}
        for k, v in node.items():
            key = k if isinstance(k, str | int) else str(k)
            out[key] = interpolate(v, lines, problems, (*path, key))
        return out
    if isinstance(node, list | tuple):
        return [interpolate(v, lines, problems, (*path, i)) for i, v in enumerate(node)]
    if isinstance(node, str):
        text = str(node)
        if "$" not in text:
            return text

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group("name"), m.group("default")
            value = os.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                problems.append(
                    lines.problem(
                        path,
                        f"environment variable {name} is not set",
                        f"Try: export {name}=… before running upkeeper, or write ${{{name}:-default}}; for the "
                        f"text ${{{name}}} itself (an nginx log_format's variable), write $${{{name}}}",
                    )
                )
                return ""
            return value

        return _ENV_REF.sub(sub, text)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` with every problem found.

    The file is parsed with the fast (C) loader; when there is a problem to report, the text is
    parsed again with line tracking so that every message names its line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist", "Try: 'upkeeper init' to write one") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p} is a directory", f"Try: --config {p / 'upkeeper.yaml'}") from None
    except UnicodeDecodeError as exc:  # a binary file, or text saved in another encoding (Latin-1, UTF-16)
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError.from_problems([ConfigProblem(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", file=str(p), line=line,
            hint="Try: save the file as UTF-8 (is it the config file?)")]) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}",
                          "Try: check the path and permissions") from None
    return load_text(text, str(p), source=p)


def load_text(text: str, file: str = "<config>", source: Path | None = None) -> Config:
    try:
        root, _ = parse_yaml(text, file, locate=False)
        lines = LineMap(None, file, text)  # parsed again with line tracking only if a problem needs a line
    except ConfigError:
        # The fast loader is libyaml, which is stricter than YAML 1.2 in places (e.g. ':' inside flow
        # scalars such as `{ url: https://x }`); the round-trip parser is the authority.
        root, lines = parse_yaml(text, file, locate=True)
    problems: list[ConfigProblem] = []
    if root is None:
        root = CommentedMap()
    if not isinstance(root, Mapping):
        raise ConfigError.from_problems(
            [lines.problem((), "the file must be a mapping of keys (version, targets, jobs …)", "Try: 'upkeeper init'")]
        )
    # top-level x-… keys are the user's (docker-compose's extension fields): the place for YAML anchors that
    # entries below merge in (<<: *pg); ignored, not interpolated (an alias is, where it is used)
    data = interpolate({k: v for k, v in root.items() if not is_extension_key(k)}, lines, problems, ())
    if problems:
        raise ConfigError.from_problems(problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_problems(validation_problems(exc, Config, data, lines)) from None
    config._source = source
    config._lines = lines
    register_config_secrets(config)
    return config


def is_extension_key(key: object) -> bool:
    """A top-level key upkeeper ignores: ``x-`` and a name (``x-pg-defaults``), as docker-compose's."""
    return isinstance(key, str) and key.startswith("x-") and len(key) > 2


def lines_for(config: Config) -> LineMap:
    """The line map a config was loaded with (an empty one for configs built in code)."""
    lines = config._lines
    if isinstance(lines, LineMap):
        return lines
    return LineMap(CommentedMap(), str(config.source or "<config>"))


def register_config_secrets(obj: Any) -> None:
    """Register every SecretStr inside ``obj`` (a model, dict or list) for redaction."""
    if isinstance(obj, SecretStr):
        register_secret(obj.get_secret_value())
    elif isinstance(obj, BaseModel):
        extra = getattr(obj, "secret_values", None)  # secrets held in plain fields (a webhook's Authorization header)
        if callable(extra):
            for value in extra():
                register_secret(value)
        for name in type(obj).model_fields:
            register_config_secrets(getattr(obj, name, None))
    elif isinstance(obj, Mapping):
        for v in obj.values():
            register_config_secrets(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            register_config_secrets(v)


# ---------------------------------------------------------------------------
# pydantic errors → located problems

_NOISE_SEGMENTS = re.compile(r"\[|^(str|int|float|bool|none|timedelta|list|dict|literal|json-or-python)$", re.I)


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    data: Any,
    lines: LineMap,
    prefix: Path_ = (),
) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError into one clear problem per field."""
    by_path: dict[Path_, list[tuple[str, str | None]]] = {}
    explained = [(err.get("type", ""), *_explain(err, model, data))
                 for err in exc.errors(include_input=False, include_url=False)]
    for typ, path, msg, hint in explained:
        # a mapping is never a union's literal alternative ('encryption: none' beside the encryption settings):
        # that alternative's "expected 'none'" only hides what the mapping's own alternative said of it
        if typ == "literal_error" and isinstance(_at(data, path), Mapping) and any(
                other[1][:len(path)] == path and other[0] != "literal_error" for other in explained):
            continue
        by_path.setdefault(path, []).append((msg, hint))
    problems = []
    for path, msgs in by_path.items():
        # unions produce one error per member; keep the informative ones
        useful = [m for m in msgs if not m[0].startswith("input should be none")] or msgs
        seen: list[tuple[str, str | None]] = []
        for m in useful:
            if m not in seen:
                seen.append(m)
        message = "; or ".join(m for m, _ in seen[:2])
        hint = next((h for _, h in seen if h), None)
        full = (*prefix, *path)
        problems.append(
            ConfigProblem(message=message, path=full, file=lines.file, line=lines.line(full), hint=hint)
        )
    return problems


#: tags of unions told apart by a callable discriminator (no key of the YAML): a channel written as its URL, a
#: login path written as its path, and a login path's mapping form — never shown in an error's path
_SHORTHAND_TAGS = ("apprise", "path")
_MAPPING_TAGS = ("entry",)


def _clean_loc(loc: Iterable[Any], data: Any) -> Path_:
    out: list[str | int] = []
    node = data
    for seg in loc:
        if isinstance(node, Mapping):
            if seg in node:
                out.append(seg)
                node = node[seg]
                continue
            if seg == node.get("kind") or seg in _MAPPING_TAGS:  # discriminated-union tag
                continue
            if isinstance(seg, str) and _NOISE_SEGMENTS.search(seg) and seg != "[key]":
                continue
            out.append(seg)
            node = None
            continue
        if isinstance(node, list) and isinstance(seg, int):
            out.append(seg)
            node = node[seg] if 0 <= seg < len(node) else None
            continue
        if isinstance(seg, str) and (_NOISE_SEGMENTS.search(seg) or seg in ("function-after", "function-before")):
            continue
        if isinstance(node, str) and seg in _SHORTHAND_TAGS:  # an entry written as one string: its union's tag
            continue
        out.append(seg)
        node = None
    return tuple(out)


def _explain(err: Any, model: type[BaseModel], data: Any) -> tuple[Path_, str, str | None]:
    loc = _clean_loc(err.get("loc", ()), data)
    typ = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    hint: str | None = None
    if typ == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        known = known_keys(model, loc[:-1], data)
        msg = f"unknown key {key!r}"
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            hint = f"Try: {close[0]!r}" + (f" (known keys: {', '.join(known)})" if len(known) <= 12 else "")
        elif known:
            hint = "Try: one of " + ", ".join(known)
        else:
            hint = "Try: remove it"
        if len(loc) == 1 and model is Config and not close:  # 'common: &defaults …' (anchors of their own)
            hint += (f"; a block that only holds YAML anchors: name it 'x-{key.removeprefix('x-') or 'NAME'}' "
                     "(top-level x-… keys are ignored)")
    elif typ == "missing":
        msg = f"required key {str(loc[-1])!r} is missing" if loc else "a required key is missing"
        hint = "Try: add it (see 'upkeeper config schema')"
    elif loc and loc[-1] == "[key]":
        loc = loc[:-1]
        msg = f"invalid name {str(loc[-1])!r}: names use letters, digits, '.', '_' and '-' (max 100)"
        hint = "Try: rename it, e.g. 'db-backup'"
    elif typ == "union_tag_invalid" or typ == "union_tag_not_found":
        ctx = err.get("ctx") or {}
        expected = ctx.get("expected_tags", "")
        if typ == "union_tag_not_found":  # pydantic names no tags then: the union's members do
            expected = expected or ", ".join(repr(k) for k in _kinds_at(model, loc, data))
            msg = "'kind' is missing"
            loc = (*loc, "kind")
        else:
            msg = f"unknown kind {ctx.get('tag')!r}"
            loc = (*loc, "kind") if "kind" in (_at(data, loc) or {}) else loc
        hint = f"Try: kind: one of {expected}"
    elif typ in ("model_type", "model_attributes_type", "dict_type"):  # not pydantic's "instance of JobConfig"
        got = _at(data, loc)  # its type only: the value itself is never in a message (a secret, perhaps)
        msg = f"expected a mapping (its keys indented below it), got {_yaml_kind(got)}"
        parent = _at(data, loc[:-1]) if loc else None
        entries = [k for k, v in parent.items() if isinstance(v, Mapping)] if isinstance(parent, Mapping) else []
        if got is None:
            hint = "Try: give it its keys, indented below it, or remove it"
        elif entries and str(loc[-1]) in known_keys(model, (*loc[:-1], entries[-1]), data):
            # "jobs -> schedule": a job's key dedented out of its job
            hint = f"Try: indent {str(loc[-1])!r} under its entry: it is a key of each entry of {str(loc[-2])!r}"
        else:
            hint = "Try: write it as keys indented below it (see 'upkeeper config schema')"
    elif typ == "list_type":  # "input should be a valid list": what was there, and how a list is written
        got = _at(data, loc)  # its type only, as above
        msg = f"expected a list, got {_yaml_kind(got)}"
        hint = (f"Try: a list, even of one item: {str(loc[-1]) + ': ' if loc else ''}[ITEM, …] on one line, or "
                "'- ITEM' lines indented below it")
    elif typ == "literal_error":
        ctx = err.get("ctx") or {}
        msg = f"invalid value: expected {ctx.get('expected', 'one of the allowed values')}"
    else:
        msg = msg[0].lower() + msg[1:] if msg else msg
        if loc and loc[-1] == "schedule" and not isinstance(_at(data, loc), str):
            # 'schedule: 5': YAML reads a bare number (or */5 …) as something else than text
            hint = ("Try: a schedule as text: a cron expression in quotes, e.g. '*/5 * * * *' or '0 3 * * *', "
                    "or '@daily', or 'every 5m'")
        elif typ in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            hint = _range_hint(model, loc, data)
    if hint is None and ". Try: " in msg:  # a validator's "what. Try: how": the hint on its own line, as elsewhere
        msg, how = msg.split(". Try: ", 1)
        hint = f"Try: {how}"
    return loc, msg, hint


def _range_hint(model: type[BaseModel], loc: Path_, data: Any) -> str | None:
    """'Try: retries: a whole number from 0 to 20' for a number out of its field's bounds (all of them: pydantic
    names only the one broken)."""
    field = _field_at(model, loc, data)
    if field is None or not loc:
        return None
    bounds: dict[str, Any] = {}
    for m in field.metadata:
        bounds.update({k: getattr(m, k) for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None})
    if "ge" in bounds and "le" in bounds:
        text = f"from {bounds['ge']} to {bounds['le']}"
    else:
        words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
        text = " and ".join(f"{words[k]} {v}" for k, v in bounds.items())
    if not text:
        return None
    kind = "a whole number" if _unwrap(field.annotation, None) is int else "a number"
    return f"Try: {loc[-1]}: {kind} {text}"


def _field_at(model: type[BaseModel], path: Path_, data: Any) -> Any:
    """The pydantic FieldInfo of the key at ``path`` inside ``model`` (None when it is no model's field)."""
    tp: Any = model
    node = data
    field = None
    for seg in path:
        step = _step(tp, node, seg)
        if step is None:
            return None
        tp, field = step
        node = _at(node, [seg])
    return field


def _step(tp: Any, node: Any, seg: str | int) -> tuple[Any, Any] | None:
    """One key down from the type ``tp`` (``node``: its data, which picks a tagged union's member): the key's type
    and, when it is a model's field, its FieldInfo; None when ``tp`` has no such key."""
    tp = _unwrap(tp, node)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(seg))
        return None if field is None else (field.annotation, field)
    if origin in (dict, Mapping):
        return typing.get_args(tp)[1], None
    if origin in (list, tuple, Sequence):
        return typing.get_args(tp)[0], None
    return None


def _yaml_kind(value: Any) -> str:
    """What a YAML value is, in a config file's words ("a int" was said of ``login_paths: 5``); never the value."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a yes/no value"
    if isinstance(value, int | float):
        return "a number"  # (not the value: it may be a secret given where a mapping belongs)
    return f"a {type(value).__name__}"  # (a date: YAML reads 2026-12-07 as one)


def _at(data: Any, path: Sequence[str | int]) -> Any:
    node = data
    for seg in path:
        try:
            node = node[seg]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def known_keys(model: type[BaseModel], path: Sequence[str | int], data: Any) -> list[str]:
    """The keys allowed at ``path`` inside ``model`` (walking dicts, lists and tagged unions)."""
    tp: Any = model
    node = data
    segs = list(path)
    i = 0
    while True:
        tp = _unwrap(tp, node)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if i >= len(segs):
                return [
                    (f.alias or n) for n, f in tp.model_fields.items() if not n.startswith("_")
                ]
            field = tp.model_fields.get(str(segs[i]))
            if field is None:
                return []
            tp = field.annotation
            node = _at(node, [segs[i]])
            i += 1
            continue
        origin = typing.get_origin(tp)
        if origin in (dict, Mapping) and i < len(segs):
            tp = typing.get_args(tp)[1]
            node = _at(node, [segs[i]])
            i += 1
            continue
        if origin in (list, tuple, Sequence) and i < len(segs):
            tp = typing.get_args(tp)[0]
            node = _at(node, [segs[i]])
            i += 1
            continue
        return []


def _kinds_at(model: type[BaseModel], path: Sequence[str | int], data: Any) -> list[str]:
    """The ``kind`` values of the tagged union at ``path`` inside ``model`` (a target, storage, channel)."""
    tp: Any = model
    node = data
    for seg in path:
        step = _step(tp, node, seg)
        if step is None:
            return []
        tp = step[0]
        node = _at(node, [seg])
    kinds: list[str] = []
    pending = [tp]
    while pending:
        t = pending.pop(0)
        if typing.get_origin(t) in (typing.Annotated, typing.Union, types.UnionType):
            args = typing.get_args(t)
            pending[:0] = args[:1] if typing.get_origin(t) is typing.Annotated else args
        elif isinstance(t, type) and issubclass(t, BaseModel) and "kind" in t.model_fields:
            kind = t.model_fields["kind"].default
            if isinstance(kind, str) and kind not in kinds:
                kinds.append(kind)
    return kinds


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip Annotated/Optional; pick the union member whose ``kind`` matches the data."""
    for _ in range(10):
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            kind = node.get("kind") if isinstance(node, Mapping) else None
            for m in members:
                if isinstance(m, type) and issubclass(m, BaseModel):
                    f = m.model_fields.get("kind")
                    if f is not None and f.default == kind:
                        tp = m
                        break
            else:
                models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
                tp = models[0] if models else members[0]
            continue
        break
    return tp
