"""docs/backups.md: the minimal setup is a valid config, and its jobs run as written against a real PostgreSQL
that has the usual 'postgres' database beside the app's: a backup, then a verify that passes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.seed import seed

from .conftest import SMALL, AgeKey

DOC = Path(__file__).resolve().parents[2] / "docs" / "backups.md"
EXAMPLE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def minimal_setup() -> str:
    section = DOC.read_text().split("## A minimal setup", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return block


def _localized(text: str, tmp_path: Path) -> str:
    """The example with its /etc and /var paths moved under ``tmp_path`` (nothing else changed)."""
    etc, store = tmp_path / "etc", tmp_path / "var-backups"
    etc.mkdir()
    store.mkdir(mode=0o700)
    text = text.replace("/etc/upkeeper/", f"{etc}/").replace("/var/backups/upkeeper", str(store))
    for ref in re.findall(r"_file: (\S+?)[,}\s]", text):
        if not Path(ref).exists():
            Path(ref).write_text("example-secret\n")
    return text


def test_minimal_setup_is_a_valid_config(tmp_path: Path) -> None:
    setup = build_setup(load_text(_localized(minimal_setup(), tmp_path), file=str(DOC)))
    assert set(setup.jobs) == {"db-backup", "backup-verify"}
    assert set(setup.config.storages) == {"local", "offsite"}


def test_minimal_setup_backs_up_and_verifies(cli: Any, pg: PostgresCluster, tmp_path: Path,
                                            age_key: AgeKey) -> None:
    """Its jobs, run as written (only the local storage: the S3 one is an example host), with the doc's own
    smoke check, on a server whose 'postgres' database has no 'users' table."""
    pg.execute("DROP DATABASE IF EXISTS app WITH (FORCE)")
    pg.create_database("app")
    with pg.connect("app") as conn:
        seed(conn, SMALL)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pg.pass").write_text("unused\n")
    key = tmp_path / "etc" / "backup-key.txt"
    key.write_bytes(age_key.identity.read_bytes())
    text = minimal_setup()
    assert EXAMPLE_RECIPIENT in text and "port: 5432" in text
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("offsite:"))
    text = (text.replace(EXAMPLE_RECIPIENT, age_key.recipient).replace("port: 5432", f"port: {pg.port}")
            .replace("/etc/upkeeper/", f"{tmp_path / 'etc'}/").replace("/var/backups/upkeeper", str(tmp_path / "store")))
    (tmp_path / "store").mkdir(mode=0o700)
    config = tmp_path / "upkeeper.yaml"
    config.write_text(f"history: {tmp_path / 'history.db'}\n" + text)
    try:
        for job in ("db-backup", "backup-verify"):
            res = cli(["--config", config, "run", job, "--json"])
            assert res.code == 0, res.output
            assert res.json()[0]["status"] == "ok", res.output
    finally:
        pg.execute("DROP DATABASE IF EXISTS app WITH (FORCE)")


SRC = Path(__file__).resolve().parents[2] / "src" / "upkeeper"


def test_commands_block_names_every_option_of_the_cli() -> None:
    """The '## Commands' block lists each 'upkeeper backups' subcommand with exactly the options the CLI takes
    (it lacked list's --database, verify's --target/--jobs/--scratch-target/--min-free-*/--json, restore's
    --storage/--jobs/--json and prune's --json)."""
    import typer.main

    import upkeeper.cli.main  # noqa: F401  (registers every command)
    from upkeeper.cli.backups import backups_app

    section = DOC.read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(.*?)```", section, re.S)[0]
    documented: dict[str, set[str]] = {}
    for line in block.splitlines():
        argv = line.split("  #", 1)[0].split()
        assert argv[:2] == ["upkeeper", "backups"], line
        documented.setdefault(argv[2], set()).update(re.findall(r"--[a-z][a-z-]*", " ".join(argv[3:])))
    group = typer.main.get_group(backups_app)
    cli = {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"}
           for name, cmd in group.commands.items()}
    assert documented == cli


def backup_finding_ids() -> set[str]:
    """Every check id a backup task reports: literals 'backup.…' in the backup code that are neither a metric's
    name (a dict key) nor a task's name."""
    ids: set[str] = set()
    for path in [*(SRC / "tasks" / "backup").glob("*.py"), *(SRC / "backup").glob("*.py")]:
        ids.update(re.findall(r'(?<!name = )"(backup\.[a-z_]+)"(?![:\]])', path.read_text()))
    return ids


def test_every_finding_is_documented() -> None:
    """docs/backups.md names every check id the backup tasks report (backup.verify_failed, backup.failed,
    backup.retention_failed and backup.path_missing were nowhere: notification routes match on them)."""
    ids = backup_finding_ids()
    assert {"backup.failed", "backup.verify_failed", "backup.stale_source", "backup.connection_limit"} <= ids
    text = DOC.read_text()
    assert not sorted(i for i in ids if f"`{i}`" not in text)
