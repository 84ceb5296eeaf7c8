"""Generate the config reference, the task reference and README's task table from code.

``python -m upkeeper.docsgen`` writes them; ``--check`` exits 1 when a file
drifted (a test runs the check).  Option descriptions name the source of their
default ("Source: Netdata …") — that sentence is part of the description.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from upkeeper.config.backup import BackupSettings, EncryptionSettings, RetentionPolicy
from upkeeper.config.models import Config, DaemonSettings, Defaults, HistoryRetention, JobConfig
from upkeeper.config.notify import (
    AppriseChannel,
    BackupAlerts,
    Delivery,
    Escalation,
    EscalationLevel,
    NotificationsConfig,
    PagerDutyChannel,
    Route,
    SlackChannel,
    WebhookChannel,
)
from upkeeper.config.storage import LocalStorageConfig, S3StorageConfig, SftpStorageConfig
from upkeeper.config.targets import (
    AppTarget,
    HostTarget,
    HttpTarget,
    NginxTarget,
    PostgresTarget,
    RedisTarget,
)
from upkeeper.config.types import format_duration
from upkeeper.config.windows import BlackoutConfig, WindowConfig
from upkeeper.core.task import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
TASKS_MD = ROOT / "docs" / "tasks.md"
CONFIG_MD = ROOT / "docs" / "config-reference.md"
README = ROOT / "README.md"
TASK_INDEX = ROOT / "src" / "upkeeper" / "tasks" / "_index.py"
HELP_INDEX = ROOT / "src" / "upkeeper" / "cli" / "_help_index.py"
TABLE_START = "<!-- tasks:start -->"
TABLE_END = "<!-- tasks:end -->"

#: Extra top-level config sections contributed by feature packages: (title, key, model).
EXTRA_SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("Settings shared by every backup job (see docs/backups.md).", "backup", BackupSettings),
    ("age encryption of backups: X25519 recipients, or a passphrase. Or write `encryption: none`.",
     "backup -> encryption", EncryptionSettings),
    ((RetentionPolicy.__doc__ or "").strip().replace("\n    ", "\n"), "backup -> retention", RetentionPolicy),
    ("Where notifications go and when (docs/notifications.md).", "notifications", NotificationsConfig),
    ("Any apprise URL — `name: \"slack://…\"` is short for `name: {kind: apprise, url: \"slack://…\"}`.",
     "notifications -> channels -> NAME (kind apprise)", AppriseChannel),
    ("A Slack incoming webhook, posted in Slack's message format.", "notifications -> channels -> NAME (kind slack)",
     SlackChannel),
    ("POSTs upkeeper's JSON payload (schema: `upkeeper notify schema`).",
     "notifications -> channels -> NAME (kind webhook)", WebhookChannel),
    ("PagerDuty Events API v2: trigger on a problem, resolve on recovery, one dedup_key per job and check.",
     "notifications -> channels -> NAME (kind pagerduty)", PagerDutyChannel),
    ("A rule sending matching events to channels; every matching route applies.", "notifications -> routes -> N",
     Route),
    ("Escalation policy for unresolved problems.", "notifications -> escalation", Escalation),
    ("One escalation level.", "notifications -> escalation -> levels -> N", EscalationLevel),
    ("Alerts computed from the history of backup-category jobs.", "notifications -> backup", BackupAlerts),
    ("Retries of failed deliveries.", "notifications -> delivery", Delivery),
    ("A maintenance window (docs/windows.md): jobs with `window: NAME` start only inside it.", "windows -> NAME",
     WindowConfig),
    ("A blackout: runs inside it are skipped (recorded) unless the job's category is excepted.",
     "blackouts -> NAME", BlackoutConfig),
]


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "oneOf" in schema:  # a union told apart by a discriminator
        return " \\| ".join(dict.fromkeys(_type_of(s, defs) for s in schema["oneOf"]))
    if "anyOf" in schema:
        if any("(ms|s|m|h|d|w)" in str(s.get("pattern", "")) for s in schema["anyOf"]):
            return "duration"
        if any(_type_of(s, defs) == "duration" for s in schema["anyOf"]):
            return "duration \\| null"
        parts = [_type_of(s, defs) for s in schema["anyOf"]]
        if "description" in schema and "duration" in schema.get("description", ""):
            return "duration"
        return " \\| ".join(dict.fromkeys(parts))
    t = schema.get("type")
    if t == "array":
        return f"list of {_type_of(schema.get('items', {}), defs)}"
    if t == "object":
        add = schema.get("additionalProperties")
        if isinstance(add, dict) and add:
            return f"map of {_type_of(add, defs)}"
        return "mapping"
    if str(schema.get("description", "")).startswith("restic duration"):
        return "restic duration"
    if t is None and "description" in schema:
        d = schema["description"]
        if d.startswith("duration"):
            return "duration"
        if d.startswith("size"):
            return "size"
    return str(t or "any")


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, list) and value and all(isinstance(v, timedelta) for v in value):
        return "`[" + ", ".join(format_duration(v) for v in value) + "]`"
    if isinstance(value, BaseModel):
        # a default that is not the entries' own defaults (redis.backup's week of dailies): say which it is
        own = {k: v for k, v in value.model_dump(exclude_defaults=True, mode="json").items()}
        if own:
            return "`" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in own.items()) + "`; entries left out of " \
                "one you give take the defaults below"
        return "(see below)"
    if value is None:
        return "—"
    if isinstance(value, str) and "socket" in str(field.description or "") and value == "":
        return "—"
    return f"`{json.dumps(value, default=str)}`"


def options_table(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="validation")
    props = schema.get("properties", {})
    defs = schema.get("$defs", {})
    rows = ["| option | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        p = props.get(field.alias or name, {})
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        if name.endswith("_file") and not desc:
            desc = f"file whose content is `{name[:-5]}` (instead of giving it inline)"
        rows.append(f"| `{field.alias or name}` | {_type_of(p, defs)} | {_default(field)} | {desc} |")
    if len(rows) == 2:
        return "_No options._\n"
    return "\n".join(rows) + "\n"


def nested_models(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """Option fields whose values are models (or lists of models): documented in their own tables."""
    import typing

    out = []
    for name, field in model.model_fields.items():
        todo = [field.annotation]
        while todo:
            t = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                out.append((field.alias or name, t))
                break
            todo.extend(typing.get_args(t))
    return out


def tasks_markdown() -> str:
    out = [
        "# Task reference",
        "",
        "Generated from the code by `python -m upkeeper.docsgen`; a test fails when it drifts.",
        "Each option's default names its source where it comes from an anchor tool or the maintenance",
        "procedures upkeeper automates.",
        "",
        "| task | category | targets | summary |",
        "|---|---|---|---|",
    ]
    for cls in REGISTRY:
        anchor = cls.name.replace(".", "")
        out.append(f"| [`{cls.name}`](#{anchor}) | {cls.category} | {', '.join(cls.target_kinds) or '—'} | "
                   f"{cls.summary} |")
    for cls in REGISTRY:
        out += ["", f"## `{cls.name}`", "", cls.summary[0].upper() + cls.summary[1:] + "."]
        doc = (cls.__doc__ or "").strip()
        if doc and doc != cls.summary:
            out += ["", doc]
        facts = [f"category `{cls.category}`", "targets: " + (", ".join(f"`{k}`" for k in cls.target_kinds) or "—")]
        if cls.exclusive:
            facts.append("takes the target's exclusive lock")
        if cls.default_timeout:
            facts.append(f"default timeout {format_duration(timedelta(seconds=cls.default_timeout))}")
        retention = getattr(cls, "metrics_retention", None)
        if isinstance(retention, timedelta):
            facts.append(f"metrics kept {format_duration(retention)}")
        out += ["", "; ".join(facts) + ".", "", options_table(cls.Options).rstrip()]
        for field_name, sub in nested_models(cls.Options):
            doc = " ".join((sub.__doc__ or "").split())
            out += ["", f"**`{field_name}` entries**" + (f" — {doc}" if doc else ""), "", options_table(sub).rstrip()]
    return "\n".join(out) + "\n"


def config_markdown() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the code by `python -m upkeeper.docsgen`; a test fails when it drifts.",
        "`upkeeper config schema` prints the same as JSON Schema for editors.",
        "",
        "Values may use `${VAR}` or `${VAR:-default}` to read the environment (`$$` is a literal `$`).",
        "Every secret (`password`, tokens …) may instead be given as `<name>_file: /path` — the file's",
        "content is used (without its trailing newline). An empty secret file or an empty `${VAR}` is a config",
        "error, never \"no secret\" (S3 would otherwise fall back to `AWS_SECRET_ACCESS_KEY` silently).",
        "Secrets never appear in logs, history, error messages or `--json` output.",
        "",
        "Durations are written `30s`, `15m`, `2h`, `1d`, `1h30m` or as seconds; sizes as `100MB`, `1GiB`",
        "or bytes.",
        "",
        "Top-level keys starting with `x-` are ignored, as in docker-compose: the place for YAML anchors that",
        "several entries merge in (`x-pg: &pg {kind: postgres, host: db1}`, then `<<: *pg` in each target).",
        "Any other unknown key, at any level, is an error.",
        "",
        "## Top level",
        "",
        options_table(Config).rstrip(),
        "",
        "## `defaults`",
        "",
        "Policies every job inherits unless it sets its own.",
        "",
        options_table(Defaults).rstrip(),
        "",
        "## `daemon`",
        "",
        options_table(DaemonSettings).rstrip(),
        "",
        "## `history_retention`",
        "",
        " ".join((HistoryRetention.__doc__ or "").split()),
        "",
        options_table(HistoryRetention).rstrip(),
        "",
        "## `jobs -> NAME`",
        "",
        "A job is a task applied to a target on a schedule, with policies. Schedules are five-field cron",
        "expressions (Debian cron semantics, including across DST changes), `@hourly`/`@daily`/`@weekly`/",
        "`@monthly`/`@yearly`, or intervals such as `every 15m` (real elapsed spacing).",
        "",
        options_table(JobConfig).rstrip(),
        "",
        "## `targets -> NAME`",
        "",
        "What upkeeper maintains. Each target has a `kind`:",
    ]
    target_models: tuple[type[BaseModel], ...] = (
        PostgresTarget, RedisTarget, NginxTarget, HostTarget, AppTarget, HttpTarget)
    for model in target_models:
        kind = model.model_fields["kind"].default
        out += ["", f"### kind `{kind}`", "", (model.__doc__ or "").strip(), "", options_table(model).rstrip()]
    out += [
        "",
        "## `storages -> NAME`",
        "",
        "Where backups go. Each storage has a `kind`; jobs name storages by NAME. See",
        "[storage.md](storage.md) for examples, atomicity per backend, S3 permissions and SFTP host keys.",
    ]
    for smodel in (LocalStorageConfig, S3StorageConfig, SftpStorageConfig):
        kind = smodel.model_fields["kind"].default
        out += ["", f"### kind `{kind}`", "", (smodel.__doc__ or "").strip(), "", options_table(smodel).rstrip()]
    for title, key, model in EXTRA_SECTIONS:
        out += ["", f"## `{key}`", "", title, "", options_table(model).rstrip()]
    return "\n".join(out) + "\n"


def readme_table() -> str:
    rows = ["| task | what it does |", "|---|---|"]
    rows += [f"| `{cls.name}` | {cls.summary} |" for cls in REGISTRY]
    return "\n".join(rows)


def render_readme(text: str) -> str:
    if TABLE_START not in text or TABLE_END not in text:
        return text
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{readme_table()}\n{TABLE_END}{tail}"


def task_index() -> str:
    """``tasks/_index.py``: task name → module, so a config imports only the families it uses."""
    lines = [
        '"""Generated by ``python -m upkeeper.docsgen``: which module defines each built-in task."""',
        "",
        "TASK_MODULES: dict[str, str] = {",
        *[f'    "{cls.name}": "{cls.__module__}",' for cls in REGISTRY if cls.__module__.startswith("upkeeper.")],
        "}",
    ]
    return "\n".join(lines) + "\n"


def help_index() -> str:
    """``cli/_help_index.py``: each command's help as ``upkeeper --help`` lists it, so that listing imports no
    command module (:func:`upkeeper.cli.main.load_commands`).  Read in a new interpreter: the order of the commands
    is the order their modules are imported in, which in this process may be any."""
    import subprocess

    code = ("import importlib, json\nfrom upkeeper.cli import main\nfrom upkeeper.cli._app import app, reflow_help\n"
            "for name in main.command_modules():\n    importlib.import_module(f'upkeeper.cli.{name}')\n"
            "reflow_help()\n"
            "out = [('command', c.name or '', c.help or '') for c in app.registered_commands]\n"
            "out += [('group', g.name or '', g.typer_instance.info.help if g.typer_instance is not None and "
            "isinstance(g.typer_instance.info.help, str) else '') for g in app.registered_groups]\n"
            "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])})
    entries = json.loads(done.stdout)
    lines = [
        '"""Generated by ``python -m upkeeper.docsgen``: the commands as ``upkeeper --help`` lists them (kind, name,',
        'help), in the order they are registered."""',
        "",
        "COMMANDS_HELP: tuple[tuple[str, str, str], ...] = (",
        *[f"    ({kind!r}, {name!r}, {text!r})," for kind, name, text in entries],
        ")",
    ]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    files = {TASKS_MD: tasks_markdown(), CONFIG_MD: config_markdown(), TASK_INDEX: task_index(),
             HELP_INDEX: help_index()}
    if README.exists():
        files[README] = render_readme(README.read_text())
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    drifted = []
    for path, content in outputs().items():
        current = path.read_text() if path.exists() else None
        if current != content:
            drifted.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    if check and drifted:
        for p in drifted:
            print(f"out of date: {p.relative_to(ROOT)} — run 'make docs'", file=sys.stderr)
        return 1
    if not check:
        print("docs written: " + ", ".join(str(p.relative_to(ROOT)) for p in outputs()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
