"""The YAML examples in docs/notifications.md and docs/windows.md, and the block 'upkeeper init' writes
commented out, are valid configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from upkeeper.config.loader import load_text
from upkeeper.core.initgen import NOTIFY_EXAMPLE
from upkeeper.core.jobs import build_setup

DOCS = Path(__file__).resolve().parents[2] / "docs"
ENV = {"SMTP_PASSWORD": "pw-1234", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
       "PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef", "HOOK_SECRET": "hook-secret",
       "SMTP_USER": "alerts"}


def blocks(name: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (DOCS / name).read_text(), re.S)


@pytest.mark.parametrize("doc, index", [(d, i) for d in ("notifications.md", "windows.md")
                                        for i in range(len(blocks(d)))])
def test_doc_examples_load(doc: str, index: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    text = blocks(doc)[index].replace("/etc/upkeeper/pagerduty.key", str(tmp_path / "pd.key"))
    (tmp_path / "pd.key").write_text(ENV["PAGERDUTY_ROUTING_KEY"] + "\n")
    setup = build_setup(load_text(text, f"{doc}#{index}"))
    assert setup.jobs


def test_init_example_block_loads_when_uncommented(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    text = "\n".join(ln[2:] for ln in NOTIFY_EXAMPLE if ln.startswith("# ") and not ln.startswith("# Notif")
                     and not ln.startswith("# PagerDuty") and not ln.startswith("# Maintenance"))
    config = load_text(text + "\njobs:\n  disk: {task: host.disk, schedule: '*/5 * * * *', window: monthly}\n")
    setup = build_setup(config)
    assert set(config.notifications.channels) == {"slack", "email", "pagerduty", "lead", "management"}
    assert setup.jobs["disk"].window == "monthly"


@pytest.mark.parametrize("index", range(len(blocks("notifications.md"))))
def test_doc_examples_pass_the_editor_schema(index: int) -> None:
    """'upkeeper config schema' (for editors' YAML plug-ins) accepts what the loader accepts: a channel given as a
    string, an apprise URL (docs/notifications.md), was flagged as matching none of the channel kinds."""
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    from conftest import invoke

    schema = json.loads(invoke(["config", "schema"]).out)
    data = YAML(typ="safe").load(blocks("notifications.md")[index])
    jsonschema.validate(data, schema)
    data["notifications"]["channels"]["bad"] = 42
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
