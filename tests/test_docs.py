"""Generated docs must match the code (run 'make docs' after changing tasks or config models); every YAML example of
the README and docs/ is a valid config."""

import re
from pathlib import Path

import pytest

from upkeeper.docsgen import main


def test_generated_docs_are_current() -> None:
    assert main(["--check"]) == 0, "docs drifted from the code: run 'make docs'"


def test_a_model_default_other_than_its_entries_defaults_is_shown() -> None:
    """redis.backup keeps a week of dailies; its table must not leave 'keep_daily 14' as the only default shown."""
    from upkeeper.docsgen import tasks_markdown

    section = tasks_markdown().split("## `redis.backup`", 1)[1].split("\n## ", 1)[0]
    row = next(ln for ln in section.splitlines() if ln.startswith("| `retention` |"))
    assert "`keep_daily: 7, keep_weekly: 0, keep_monthly: 0`" in row, row


# --- every YAML example of README.md and docs/*.md is a valid config ---------------------------------------------
# (the pages' own tests run some of them against real services; this one only checks that each loads, so that an
# example no test runs cannot drift from the config format unseen)

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: examples that are not configs on their own, each with why (the test fails when one is gone or changed)
NOT_A_CONFIG = {
    ("backups.md", "retention: {keep_last: 5"): "a retention setting's value, shown alone",
    ("backups.md", "recipients: [age1new…]"): "the key rotation's placeholder for the new public key",
}
ENV = {"PGPASSWORD": "pw-1234", "PG_PASSWORD": "pw-1234", "SMTP_PASSWORD": "pw-1234", "SMTP_USER": "alerts",
       "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X", "HOOK_SECRET": "hook-secret",
       "PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef", "MINIO_ACCESS_KEY": "minio",
       "MINIO_SECRET_KEY": "minio-secret", "REDIS_PASSWORD": "pw-1234"}


def _examples() -> list[tuple[str, int, str]]:
    out = []
    for page in PAGES:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)):
            out.append((page.name, i, block))
    return out


EXAMPLES = _examples()


def test_the_list_of_examples_that_are_no_config_is_current() -> None:
    for (page, start), why in NOT_A_CONFIG.items():
        assert any(p == page and start in block for p, _, block in EXAMPLES), f"{page}: no example {start!r} ({why})"


@pytest.mark.parametrize("page, index", [(p, i) for p, i, _ in EXAMPLES])
def test_every_yaml_example_in_the_docs_loads(page: str, index: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ruamel.yaml import YAML

    from upkeeper.config.loader import load_text
    from upkeeper.core.jobs import build_setup

    text = next(b for p, i, b in EXAMPLES if (p, i) == (page, index))
    why = next((w for (p, start), w in NOT_A_CONFIG.items() if p == page and start in text), None)
    if why:
        pytest.skip(why)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    # the secret and key files an example names: files of this test (a PagerDuty key has 32 characters)
    for path in sorted(set(re.findall(r"/etc/upkeeper/[\w.-]+", text))):
        local = tmp_path / Path(path).name
        local.write_text(ENV["PAGERDUTY_ROUTING_KEY"] + "\n" if "pagerduty" in path else "secret-value\n")
        text = text.replace(path, str(local))
    # a fragment (a job, a storage) names the targets of the page's full example
    data = YAML(typ="safe", pure=True).load(text) or {}
    if "targets" not in data and "jobs" in data:
        for _, _, other in (e for e in EXAMPLES if e[0] == page):
            targets = (YAML(typ="safe", pure=True).load(other) or {}).get("targets") if "targets:" in other else None
            if targets:
                text = "targets:\n" + "\n".join(
                    f"  {name}: {{{', '.join(f'{k}: {v!r}' for k, v in t.items() if not str(v).startswith('${'))}}}"
                    for name, t in targets.items()) + "\n" + text
                break
    setup = build_setup(load_text(text, f"{page}#{index}"))
    assert setup.config is not None
