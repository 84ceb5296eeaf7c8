"""Generated docs must match the code: run 'make docs' after changing tasks or config models."""

from upkeeper.docsgen import main


def test_generated_docs_are_current() -> None:
    assert main(["--check"]) == 0, "docs drifted from the code: run 'make docs'"


def test_a_model_default_other_than_its_entries_defaults_is_shown() -> None:
    """redis.backup keeps a week of dailies; its table must not leave 'keep_daily 14' as the only default shown."""
    from upkeeper.docsgen import tasks_markdown

    section = tasks_markdown().split("## `redis.backup`", 1)[1].split("\n## ", 1)[0]
    row = next(ln for ln in section.splitlines() if ln.startswith("| `retention` |"))
    assert "`keep_daily: 7, keep_weekly: 0, keep_monthly: 0`" in row, row
