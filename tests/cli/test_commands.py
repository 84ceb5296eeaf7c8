"""Every CLI command, its exit codes and its --json shape, against real history (and a real PostgreSQL)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from upkeeper.core.history import History
from upkeeper.sandbox.postgres import PostgresCluster


@pytest.fixture
def config(make_config: Any, pg: PostgresCluster, pg_db: str) -> Path:
    path: Path = make_config({
        "timezone": "Europe/Berlin",
        "targets": {"db": pg.target(pg_db)},
        "jobs": {
            "ping": {"task": "postgres.ping", "target": "db", "schedule": "*/5 * * * *"},
            "vacuum": {"task": "postgres.vacuum", "target": "db", "schedule": "30 2 * * *"},
            "disk": {"task": "host.disk", "schedule": "every 15m", "timezone": "UTC"},
            "broken": {"task": "debug.fail", "options": {"message": "planned failure"}},
            "off": {"task": "debug.noop", "schedule": "@daily", "enabled": False},
        },
    })
    return path


def test_version_and_help(cli: Any) -> None:
    assert re.fullmatch(r"upkeeper \d+\.\d+\.\d+\n", cli(["--version"]).out)
    res = cli(["--help"])
    assert res.code == 0
    for cmd in ("init", "config", "tasks", "jobs", "run", "daemon", "status", "history", "show", "cron", "demo"):
        assert cmd in res.out


def test_tasks_json(cli: Any) -> None:
    res = cli(["tasks", "--json"])
    assert res.code == 0
    rows = res.json()
    names = [r["name"] for r in rows]
    assert {"postgres.ping", "postgres.vacuum", "host.disk", "debug.noop"} <= set(names)
    assert names == sorted(names)
    assert set(rows[0]) == {"name", "summary", "category", "target_kinds", "exclusive", "options"}
    assert "Tasks" in cli(["tasks"]).out


def test_jobs_shows_next_three_fires_in_job_timezone(cli: Any, config: Path) -> None:
    res = cli(["--config", config, "jobs", "--json"])
    assert res.code == 0
    jobs = {j["job"]: j for j in res.json()}
    assert len(jobs["vacuum"]["next"]) == 3
    assert all(s.endswith(("CET", "CEST")) and "02:30" in s for s in jobs["vacuum"]["next_local"])
    assert all(s.endswith("UTC") for s in jobs["disk"]["next_local"])
    assert jobs["broken"]["next"] == [] and jobs["broken"]["schedule"] is None
    assert jobs["off"]["enabled"] is False and jobs["off"]["next"] == []
    table = cli(["--config", config, "jobs"]).out
    assert "manual only" in table and "disabled" in table


def test_run_status_history_show_roundtrip(cli: Any, config: Path) -> None:
    res = cli(["--config", config, "run", "ping", "vacuum", "disk", "--json"])
    assert res.code == 0, res.output
    runs = res.json()
    assert [r["job"] for r in runs] == ["ping", "vacuum", "disk"]
    assert {r["status"] for r in runs} <= {"ok", "warn"}
    for r in runs:
        assert set(r) >= {"run_id", "job", "task", "status", "summary", "duration", "findings", "metrics"}
    ping = runs[0]
    assert "PostgreSQL 15" in ping["summary"] and ping["metrics"]["connect_ms"] > 0

    # a failing job: exit code 1
    fail = cli(["--config", config, "run", "broken", "--json"])
    assert fail.code == 1 and fail.json()[0]["status"] == "fail"

    status = cli(["--config", config, "status", "--json"]).json()
    by_job = {j["job"]: j for j in status["jobs"]}
    assert by_job["ping"]["last_run"]["status"] in ("ok", "warn")
    assert by_job["ping"]["next_run"] is not None
    assert by_job["broken"]["consecutive_failures"] == 1
    assert by_job["off"]["next_run"] is None
    assert status["daemons"] == []
    text = cli(["--config", config, "status"]).out
    assert "daemon: not running" in text

    hist = cli(["--config", config, "history", "--json"])
    assert hist.code == 0
    rows = hist.json()
    assert len(rows) == 4 and {r["trigger"] for r in rows} == {"manual"}
    assert cli(["--config", config, "history", "ping", "--json"]).json()[0]["job"] == "ping"
    assert cli(["--config", config, "history", "--since", "1h", "--json"]).json()
    assert cli(["--config", config, "history", "--since", "2999-01-01", "--json"]).json() == []
    assert cli(["--config", config, "history", "--status", "fail", "--json"]).json()[0]["job"] == "broken"

    show = cli(["--config", config, "show", str(ping["run_id"]), "--json"])
    detail = show.json()
    assert detail["id"] == ping["run_id"] and detail["metrics"]["connect_ms"] > 0
    assert set(detail) >= {"findings", "metrics", "log", "artifacts", "details"}
    human = cli(["--config", config, "show", str(fail.json()[0]["run_id"])]).out
    assert "debug.failure" in human and "planned failure" in human


def test_show_prints_a_long_summary_and_log_line_whole(cli: Any, make_config: Any) -> None:
    """'upkeeper show' cropped its panels at the terminal's width (80 columns in a pipe): an error's summary such as
    'cannot tell where postgres://… writes its log (pg_current_logfile() is empty: the logging collector is off)'
    ended at 'writes its lo', and so did every long log line.  Now wrapped inside the panel, every word there."""
    words = " ".join(f"word{i:03d}" for i in range(300))  # wider than any terminal
    cfg = make_config({"jobs": {"long": {"task": "debug.fail", "options": {"mode": "error", "message": words}}}})
    [run] = cli(["--config", cfg, "run", "long", "--json", "--no-retry"]).json()
    out = cli(["--config", cfg, "show", str(run["run_id"])]).out
    summary, log = out.split("─ log ─", 1)
    for part in (summary, log):
        shown = re.findall(r"word\d\d\d", part)
        assert shown[:300] == [f"word{i:03d}" for i in range(300)], part


def test_listings_fold_a_long_name_instead_of_cutting_it(cli: Any, make_config: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns 'upkeeper jobs' showed 'compliance-repo…' and 'postgres.maint…', 'upkeeper tasks'
    'rotate/compress/pr…': a name cut short cannot be copied into 'upkeeper run'.  Every listing folds it now."""
    from upkeeper.cli import _app

    monkeypatch.setattr(_app.console, "_width", 80)  # (restored as it was: computed or set)
    name = "disk-space-and-inodes-of-every-mount-point"
    cfg = make_config({"jobs": {name: {"task": "host.disk", "schedule": "every 5m"}}})

    def first_column(text: str) -> str:
        return "".join(ln.split("│")[1].strip() for ln in text.splitlines() if ln.startswith("│"))

    for argv in (["jobs"], ["storages", "list"]):
        out = cli(["--config", cfg, *argv]).out
        assert "…" not in out, out
    assert first_column(cli(["--config", cfg, "jobs"]).out) == name
    tasks = cli(["tasks"]).out
    assert "rotate/compress/prune" in tasks.replace("│", "").replace("\n", "").replace(" ", "")


def test_usage_errors_exit_2_with_hint(cli: Any, config: Path) -> None:
    res = cli(["--config", config, "run", "pnig"])
    assert res.code == 2
    assert "Error: no job named 'pnig'" in res.err and "Try: 'ping'" in res.err
    assert cli(["--config", config, "run"]).code == 2
    assert cli(["--config", config, "run", "ping", "--all"]).code == 2
    assert cli(["--config", config, "show", "999999"]).code == 2
    assert cli(["--config", config, "history", "--since", "yesterdayish"]).code == 2
    missing = cli(["--config", "/nonexistent/upkeeper.yaml", "jobs"])
    assert missing.code == 2 and "does not exist" in missing.err and "Try:" in missing.err
    assert cli(["nosuchcommand"]).code == 2


def test_config_check_notes_a_history_every_user_can_read(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A history made before upkeeper made it 0600 is 0644 under the usual umask: every local user could read
    every run's findings and log excerpts, and nothing said so.  'config check' now notes it (exit 0) with the
    chmod; a 0600 or 0640 one passes without a note."""
    db = tmp_path / "history.db"
    cfg = make_config({"history": str(db), "jobs": {"disk": {"task": "host.disk"}}})
    assert cli(["--config", cfg, "run", "disk"]).code == 0
    assert db.stat().st_mode & 0o777 == 0o600
    assert cli(["--config", cfg, "config", "check", "--json"]).json()["notes"] == []
    for p in tmp_path.glob("history.db*"):
        p.chmod(0o644)
    res = cli(["--config", cfg, "config", "check", "--json"])
    assert res.code == 0
    [note] = res.json()["notes"]
    assert note["path"] == ["history"] and note["line"] is not None, note
    assert note["message"].startswith(f"readable by every user: {db} (0644)"), note
    assert note["hint"] == f"Try: chmod 600 {db}*  (upkeeper makes a new history 0600; 0640 lets a group read it)"
    for p in tmp_path.glob("history.db*"):
        p.chmod(0o640)
    assert cli(["--config", cfg, "config", "check", "--json"]).json()["notes"] == []


def test_config_check_notes_a_config_without_jobs(cli: Any, config: Path, tmp_path: Path) -> None:
    """An empty file (or the wrong one: 'touch upkeeper.yaml', a file of targets only) passed with a bare 'OK …:
    0 job(s)', as if it were the setup asked for: a daemon on it would never run anything.  Still valid (exit 0),
    now with a note that says so and what to do."""
    for text in ("", "targets:\n  db: {kind: postgres}\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        res = cli(["--config", empty, "config", "check"])
        assert res.code == 0, res.output
        assert "note jobs: none defined: nothing runs with this config" in res.out, res.out
        assert "upkeeper init" in res.out
        notes = cli(["--config", empty, "config", "check", "--json"]).json()["notes"]
        assert [n["path"] for n in notes] == [["jobs"]], notes
    ok = cli(["--config", config, "config", "check", "--json"])
    assert ok.json()["notes"] == []
    assert not [ln for ln in cli(["--config", config, "config", "check"]).out.splitlines() if ln.startswith("note")]


def test_config_check_notes_a_local_storage_directory_that_does_not_exist(cli: Any, make_config: Any,
                                                                          tmp_path: Path) -> None:
    """A local storage whose directory is missing (a typo, a volume not mounted, the README's example path on a
    new machine) passed 'config check' with a bare OK; the first backup failed at night.  Still valid (exit 0:
    a volume may be mounted later), now with a note naming the line and the mkdir that fixes it."""
    missing = tmp_path / "bakups"
    cfg = make_config({"storages": {"nas": {"kind": "local", "path": str(missing)}},
                       "jobs": {"disk": {"task": "host.disk"}}}, storage_dirs=False)
    res = cli(["--config", cfg, "config", "check"])
    assert res.code == 0, res.output
    assert f"storages -> nas -> path: {missing} does not exist: backups to this storage fail" in res.out, res.out
    assert f"mkdir -p -m 700 {missing}" in res.out
    [note] = cli(["--config", cfg, "config", "check", "--json"]).json()["notes"]
    assert note["path"] == ["storages", "nas", "path"] and note["line"]
    missing.mkdir()
    assert cli(["--config", cfg, "config", "check", "--json"]).json()["notes"] == []


def test_config_check_and_schema(cli: Any, config: Path, tmp_path: Path) -> None:
    ok = cli(["--config", config, "config", "check", "--json"])
    assert ok.code == 0 and ok.json()["ok"] is True and ok.json()["jobs"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  a:\n    task: postgres.vacum\n  b:\n    task: host.disk\n    schedule: '99 * * * *'\n")
    res = cli(["--config", bad, "config", "check"])
    assert res.code == 2
    assert "bad.yaml:3: jobs -> a -> task: unknown task 'postgres.vacum'" in res.err
    assert "bad.yaml:6: jobs -> b -> schedule:" in res.err
    js = cli(["--config", bad, "config", "check", "--json"])
    assert js.code == 2 and {p["line"] for p in js.json()["problems"]} == {3, 6}
    schema = json.loads(cli(["config", "schema"]).out)
    assert schema["$schema"].endswith("2020-12/schema")
    job = schema["$defs"]["JobConfig"]
    assert "postgres.vacuum" in job["properties"]["task"]["enum"]
    vac = next(b for b in job["allOf"] if b["if"]["properties"]["task"]["const"] == "postgres.vacuum")
    ref = vac["then"]["properties"]["options"]["$ref"].rsplit("/", 1)[-1]
    assert "lock_timeout" in schema["$defs"][ref]["properties"]


def test_schema_validates_a_real_config(cli: Any, config: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    schema = json.loads(cli(["config", "schema"]).out)
    data = YAML(typ="safe").load(config.read_text())
    jsonschema.validate(data, schema)
    data["jobs"]["vacuum"]["options"] = {"tabels": ["x"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_cron_export(cli: Any, config: Path, tmp_path: Path) -> None:
    text = cli(["--config", config, "cron", "export"]).out
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert "CRON_TZ=Europe/Berlin" in lines and "CRON_TZ=UTC" in lines
    vac = next(ln for ln in lines if " run vacuum " in ln)
    assert vac.startswith("30 2 * * * ") and f"--config {config.resolve()}" in vac and "--quiet" in vac
    disk = next(ln for ln in lines if " run disk " in ln)
    assert disk.startswith("*/15 * * * * ")
    assert not any(" run broken " in ln or " run off " in ln for ln in lines)  # manual / disabled

    out = tmp_path / "units"
    res = cli(["--config", config, "cron", "export", "--systemd", "--output", out])
    assert res.code == 0
    timer = (out / "upkeeper-vacuum.timer").read_text()
    assert "OnCalendar=*-*-* 02:30:00 Europe/Berlin" in timer and "Persistent=true" in timer
    assert "OnCalendar=*-*-* *:00/15:00 UTC" in (out / "upkeeper-disk.timer").read_text()
    service = (out / "upkeeper-vacuum.service").read_text()
    assert "Type=oneshot" in service and " run vacuum --scheduled --quiet" in service


@pytest.fixture
def backup_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the config 'init' writes keeps its backups (a directory that init creates)."""
    from upkeeper.core import initgen

    path = tmp_path / "var" / "backups" / "upkeeper"
    monkeypatch.setattr(initgen, "BACKUP_DIR", str(path))
    return path


def test_init_writes_a_config_that_checks(cli: Any, tmp_path: Path, pg: PostgresCluster, backup_dir: Path) -> None:
    out = tmp_path / "upkeeper.yaml"
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres", "PGDATABASE": "postgres"}
    res = cli(["init", "--output", out], env=env)
    assert res.code == 0, res.output
    text = out.read_text()
    assert "PostgreSQL: from PG* environment variables" in text
    assert f"port: {pg.port}" in text
    assert re.search(r"^  vacuum:.*\n    task: postgres.vacuum\n    schedule: \"0 3 \* \* \*\"", text, re.M)
    # the weekly log analysis: access log, error logs, PostgreSQL log
    assert re.search(r"^  db-log-analysis: .*\n    task: logs.postgres\n", text, re.M), text
    assert re.search(r"^#? *error-log:", text, re.M) and "logs.errors" in text
    # only tasks that exist are written as active jobs
    assert re.search(r"^# +cache-check:", text, re.M) or "redis.check" not in text
    check = cli(["--config", out, "config", "check", "--json"])
    assert check.code == 0, check.output
    # upkeeper never creates a storage's directory: init does, so the config works as written
    assert f"path: {backup_dir}" in text and f"created the backup storage directory {backup_dir}" in res.out
    assert backup_dir.is_dir() and backup_dir.stat().st_mode & 0o777 == 0o700
    storages = cli(["--config", out, "storages", "check", "--json"])
    assert storages.code == 0, storages.output
    assert cli(["init", "--output", out]).code == 2  # refuses to overwrite
    assert cli(["init", "--output", out, "--force"]).code == 0
    assert "PGPASSWORD from your environment" not in text


def test_init_with_pgpassword_says_the_daemon_will_not_have_it(cli: Any, tmp_path: Path, pg: PostgresCluster,
                                                               backup_dir: Path) -> None:
    """init run with PGPASSWORD set found PostgreSQL (this shell reaches it with that password) and left 'password'
    commented out with no word about it: the daemon under systemd, without PGPASSWORD, could not connect.  The
    config and init's output now say so next to the target, and the password itself is written nowhere."""
    out = tmp_path / "upkeeper.yaml"
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres", "PGPASSWORD": "init-pw-Kq7Zx"}
    res = cli(["init", "--output", out], env=env)
    assert res.code == 0, res.output
    text = out.read_text()
    assert re.search(r"^  db:\n    kind: postgres\n(    \w+: .*\n)*    # detected with PGPASSWORD from your "
                     r"environment: a daemon \(systemd, cron\) will not have it\.\n(    # .*\n)*"
                     r"    # password_file: /etc/upkeeper/pg\.pass\n", text, re.M), text
    assert "PGPASSWORD is set in this shell" in res.out and "password_file" in res.out, res.output
    assert "init-pw-Kq7Zx" not in text and "init-pw-Kq7Zx" not in res.output
    assert cli(["--config", out, "config", "check"], env=env).code == 0


@pytest.mark.parametrize("how", ["PGPASSFILE", "~/.pgpass"])
def test_init_with_a_password_file_says_the_daemon_will_not_read_it(cli: Any, tmp_path: Path, pg: PostgresCluster,
                                                                    backup_dir: Path, how: str) -> None:
    """init run by a user whose password comes from PGPASSFILE or ~/.pgpass said nothing about it: the daemon under
    systemd or another user has neither and could not connect.  Now the config and the output say so, like for
    PGPASSWORD; the file is named, its password written nowhere."""
    home = tmp_path / "home"
    home.mkdir()
    passfile = home / ".pgpass" if how == "~/.pgpass" else tmp_path / "secrets" / "pg.pass"
    passfile.parent.mkdir(exist_ok=True)
    passfile.write_text(f"127.0.0.1:{pg.port}:*:postgres:file-pw-Wq3Rt\n")
    passfile.chmod(0o600)
    out = tmp_path / "upkeeper.yaml"
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "postgres", "HOME": str(home),
           **({"PGPASSFILE": str(passfile)} if how == "PGPASSFILE" else {})}
    res = cli(["init", "--output", out], env=env)
    assert res.code == 0, res.output
    text = out.read_text()
    named = f"PGPASSFILE={passfile} from your environment" if how == "PGPASSFILE" else \
        f"the password file {passfile} of the user who ran init"
    assert re.search(r"^  db:\n    kind: postgres\n(    \w+: .*\n)*    # detected with " + re.escape(named)
                     + r": a daemon \(systemd, cron\) under\n(    # .*\n)*    # password_file: /etc/upkeeper/pg\.pass\n",
                     text, re.M), text
    flat = " ".join(res.out.split())
    assert str(passfile) in flat and "will not read it" in flat and "password_file" in flat, res.output
    assert "file-pw-Wq3Rt" not in text and "file-pw-Wq3Rt" not in res.output
    assert cli(["--config", out, "config", "check"], env=env).code == 0
    # no password file there: no word about one
    passfile.unlink()
    res = cli(["init", "--output", out, "--force"], env=env)
    assert res.code == 0 and "will not read it" not in res.output and "password file" not in out.read_text()


def test_init_without_postgres_comments_it_out(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               backup_dir: Path) -> None:
    from upkeeper.core import initgen

    monkeypatch.setattr(initgen, "PG_SOCKET_DIRS", ("/nonexistent",))
    monkeypatch.setattr(initgen, "_tcp_open", lambda host, port, timeout=0.3: False)
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "u.yaml"
    assert cli(["init", "--output", out]).code == 0
    text = out.read_text()
    assert "# PostgreSQL: not found" in text.replace("#   - ", "# ")
    assert re.search(r"^#   db:", text, re.M) and re.search(r"^#   vacuum:", text, re.M)
    assert cli(["--config", out, "config", "check"]).code == 0


def test_init_backup_dir_puts_the_local_storage_elsewhere(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          backup_dir: Path) -> None:
    """init always wrote and created /var/backups/upkeeper: no way to try it, or to put backups on their own
    volume, without editing the config and creating the directory by hand.  --backup-dir says where."""
    monkeypatch.chdir(tmp_path)
    res = cli(["init", "--output", "u.yaml", "--backup-dir", "my backups"])
    assert res.code == 0, res.output
    wanted = tmp_path / "my backups"
    assert wanted.is_dir() and wanted.stat().st_mode & 0o777 == 0o700
    assert f"created the backup storage directory {wanted}" in " ".join(res.out.split())
    assert not backup_dir.exists()  # the default directory is left alone
    setup = cli(["--config", "u.yaml", "storages", "list", "--json"]).json()
    assert [s["where"] for s in setup] == [f"local:{wanted}"], setup
    assert cli(["--config", "u.yaml", "storages", "check", "--json"]).code == 0


def test_an_output_file_that_cannot_be_written_is_a_clear_error(cli: Any, config: Path, tmp_path: Path,
                                                                 backup_dir: Path) -> None:
    """'init --output', 'cron export --output' and 'windows --ics --output' naming a directory, or a file in a
    directory that does not exist (and 'cron export --systemd --output' naming a file), printed 'internal error:
    IsADirectoryError / FileNotFoundError / FileExistsError … report the traceback'.  Now a usage error naming the
    path and what to do; a file replaced keeps its permissions, and a symbolic link is written through."""
    scratch = tmp_path / "out"
    scratch.mkdir()
    missing = scratch / "nope" / "file"
    cfg = ["--config", config]
    for argv in (["init", "--output", scratch, "--force"], [*cfg, "cron", "export", "--output", scratch],
                 [*cfg, "windows", "--ics", "--output", scratch]):
        res = cli(argv)
        assert (res.code, "internal error" in res.err) == (2, False), (argv, res.output)
        assert f"--output {scratch} is a directory" in res.err, res.err
    for argv in (["init", "--output", missing], [*cfg, "cron", "export", "--output", missing],
                 [*cfg, "windows", "--ics", "--output", missing]):
        res = cli(argv)
        assert (res.code, "internal error" in res.err) == (2, False), (argv, res.output)
        assert f"the directory {missing.parent} does not exist" in res.err, res.err
    res = cli([*cfg, "cron", "export", "--systemd", "--output", config])
    assert (res.code, "internal error" in res.err) == (2, False), res.output
    assert "is not a directory" in res.err, res.err
    # --systemd makes its directory, not the missing directories above it (a typo made /nonexist)
    res = cli([*cfg, "cron", "export", "--systemd", "--output", missing])
    assert (res.code, "internal error" in res.err) == (2, False), res.output
    assert f"the directory {missing.parent} does not exist" in res.err, res.err
    assert not list(scratch.iterdir())  # nothing left behind: no temporary file, no directory made
    assert not backup_dir.exists()

    secret = scratch / "real.yaml"
    secret.write_text("old\n")
    secret.chmod(0o600)
    link = scratch / "upkeeper.yaml"
    link.symlink_to(secret.name)
    assert cli(["init", "--output", link, "--force"]).code == 0
    assert link.is_symlink() and secret.stat().st_mode & 0o777 == 0o600
    assert "task: host.disk" in secret.read_text()
    assert cli(["--config", link, "config", "check"]).code == 0
    assert sorted(p.name for p in scratch.iterdir()) == ["real.yaml", "upkeeper.yaml"]
    # a feed the web server's user owns keeps its owner and group (root can give them); a hard link stays one
    feed = scratch / "maintenance.ics"
    feed.write_text("old\n")
    feed.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(feed, 65534, 65534)
    other = scratch / "also.ics"
    os.link(feed, other)
    before = feed.stat()
    assert cli([*cfg, "windows", "--ics", "--output", feed]).code == 0
    after = feed.stat()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (before.st_uid, before.st_gid, 0o640)
    assert other.read_text().startswith("BEGIN:VCALENDAR") and after.st_ino == other.stat().st_ino
    other.unlink()
    assert cli([*cfg, "cron", "export", "--output", feed]).code == 0  # replaced whole now, owner kept
    replaced = feed.stat()
    assert (replaced.st_uid, replaced.st_gid, replaced.st_mode & 0o777) == (before.st_uid, before.st_gid, 0o640)
    assert replaced.st_ino != after.st_ino and "upkeeper run" in feed.read_text()


def test_init_option_examples_work_once_uncommented() -> None:
    """Each job's commented '# options: {…}' line is valid YAML and a valid option set once its '#' is removed:
    the note that follows it stays outside the braces (inside, it swallowed the closing brace)."""
    from upkeeper.config.loader import load_text
    from upkeeper.core.initgen import Detected, render
    from upkeeper.core.jobs import build_setup

    detected = Detected(postgres={"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"},
                        redis={"host": "127.0.0.1", "port": 6379},
                        nginx={"config": "/etc/nginx/nginx.conf", "access_log": "/var/log/nginx/access.log"})
    lines = render(detected).splitlines()
    examples = [i for i, ln in enumerate(lines) if ln.startswith("    # options: {")]
    assert len(examples) >= 6
    for i in examples:
        edited = [*lines[:i], lines[i].replace("# options:", "options:", 1), *lines[i + 1:]]
        setup = build_setup(load_text("\n".join(edited), file="upkeeper.yaml"))
        job = next(ln for ln in reversed(lines[:i]) if re.match(r"^  [\w-]+:", ln)).split(":")[0].strip()
        assert setup.jobs[job].options.model_fields_set, lines[i]


NGINX_CONF = """\
events { worker_connections 768; }
http {
    # nginx.org's packages log the proxy's X-Forwarded-For in 'main'
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for" $request_time';
    access_log /var/log/nginx/access.log main buffer=32k;
    include sites/*;
}
"""


def test_init_reads_the_access_logs_format_from_nginx_conf(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            backup_dir: Path) -> None:
    """init found nginx and wrote log-analysis without its log_format: a log in nginx.org's 'main' format (or any
    custom one) was read as 'combined', every line unparsed.  It reads the access_log's log_format from nginx.conf
    (and its includes), and when the format logs $http_x_forwarded_for, hints client_ip and trusted_proxies."""
    from upkeeper.core import initgen

    conf = tmp_path / "nginx" / "nginx.conf"
    (conf.parent / "sites").mkdir(parents=True)
    conf.write_text(NGINX_CONF)
    (conf.parent / "sites" / "shop").write_text("server { listen 80; access_log /var/log/nginx/shop.log; }\n")
    monkeypatch.setattr(initgen, "NGINX_CONF", str(conf))
    out = tmp_path / "u.yaml"
    res = cli(["init", "--output", out])
    assert res.code == 0, res.output
    text = out.read_text()
    assert "in log_format main (logs $http_x_forwarded_for)" in text
    setup = cli(["--config", out, "jobs", "--json"])
    assert setup.code == 0, setup.output
    job = re.search(r"^  log-analysis:.*?(?=^  \S)", text, re.M | re.S)
    assert job is not None, text
    assert '"$http_user_agent\\" \\"$http_x_forwarded_for\\" $request_time"' in job.group(0), job.group(0)
    assert "      # client_ip: x_forwarded_for" in job.group(0)
    assert cli(["--config", out, "config", "check"]).code == 0
    # the hints are valid options once uncommented
    out.write_text(text.replace("      # client_ip:", "      client_ip:").replace("      # trusted_proxies:",
                                                                                  "      trusted_proxies:"))
    check = cli(["--config", out, "config", "check"])
    assert check.code == 0, check.output
    # a plain 'combined' log: no option, no hint
    conf.write_text("http { access_log /var/log/nginx/access.log; }\n")
    assert cli(["init", "--output", out, "--force"]).code == 0
    text = out.read_text()
    assert "client_ip" not in text and "access log /var/log/nginx/access.log in log_format combined" in text


@pytest.mark.parametrize(("fmt", "extra", "client_ip"), [
    ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_x_real_ip"', "",
     "x_real_ip"),
    ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent $proxy_protocol_addr', "",
     "proxy_protocol"),
    # nginx's realip module already puts the client in $remote_addr; without it the PROXY address is the client
    ('$remote_addr - $remote_user [$time_local] "$request" $status "$http_x_real_ip"', "real_ip_header X-Real-IP;",
     None),
    ('$proxy_protocol_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent', "", None),
])
def test_init_picks_the_client_ip_of_the_log_format(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     backup_dir: Path, fmt: str, extra: str,
                                                     client_ip: str | None) -> None:
    """A format logging $http_x_real_ip or $proxy_protocol_addr (a balancer in front) got no client_ip: every
    per-client figure counted the balancer."""
    from upkeeper.core import initgen

    conf = tmp_path / "nginx.conf"
    conf.write_text(f"http {{ {extra} log_format lb '{fmt}'; access_log /var/log/nginx/access.log lb; }}\n")
    monkeypatch.setattr(initgen, "NGINX_CONF", str(conf))
    out = tmp_path / "u.yaml"
    assert cli(["init", "--output", out]).code == 0
    text = out.read_text()
    job = re.search(r"^  log-analysis:.*?(?=^  \S)", text, re.M | re.S)
    assert job is not None, text
    if client_ip is None:
        assert "client_ip" not in job.group(0)
    else:
        assert f"\n      client_ip: {client_ip}\n" in job.group(0) and "      # trusted_proxies:" in job.group(0)
    check = cli(["--config", out, "config", "check"])
    assert check.code == 0, check.output


def test_init_hints_the_cdn_header_the_log_format_logs(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         backup_dir: Path) -> None:
    """A format logging $http_cf_connecting_ip (behind Cloudflare) gets the client_ip hint, valid once uncommented."""
    from upkeeper.core import initgen

    fmt = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_cf_connecting_ip"'
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"http {{ log_format cdn '{fmt}'; access_log /var/log/nginx/access.log cdn; }}\n")
    monkeypatch.setattr(initgen, "NGINX_CONF", str(conf))
    out = tmp_path / "u.yaml"
    assert cli(["init", "--output", out]).code == 0
    text = out.read_text()
    assert "      # client_ip: header:CF-Connecting-IP" in text and "(logs $http_cf_connecting_ip)" in text
    out.write_text(text.replace("      # client_ip:", "      client_ip:").replace("      # trusted_proxies:",
                                                                                  "      trusted_proxies:"))
    check = cli(["--config", out, "config", "check"])
    assert check.code == 0, check.output


def test_init_verifies_redis_backups_too(tmp_path: Path) -> None:
    """init wrote a nightly Redis backup that no job ever test-restored (backup-verify targets the database):
    a cache-verify job verifies the Redis target's backups, with a commented redis_checks example."""
    from upkeeper.config.loader import load_text
    from upkeeper.core.initgen import Detected, render
    from upkeeper.core.jobs import build_setup

    text = render(Detected(postgres={"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"},
                           redis={"host": "127.0.0.1", "port": 6379}))
    setup = build_setup(load_text(text, file="upkeeper.yaml"))
    job = setup.jobs["cache-verify"]
    assert job.task_name == "backup.verify" and job.target_name == "cache"
    assert "backup-verify" in setup.jobs  # the database's stays
    edited = text.replace("      # redis_checks:", "      redis_checks:")
    assert edited != text
    assert build_setup(load_text(edited, file="upkeeper.yaml")).jobs["cache-verify"].options.model_dump()["redis_checks"]
    edited = text.replace("      # checks:", "      checks:")
    assert build_setup(load_text(edited, file="upkeeper.yaml")).jobs["backup-verify"].options.model_dump()["checks"]


def test_secrets_never_reach_history_or_json(cli: Any, make_config: Any, tmp_path: Path,
                                             pg: PostgresCluster) -> None:
    secret = "Sup3r-Secret-Pw-42"
    (tmp_path / "pw").write_text(secret)
    cfg = make_config({
        "targets": {"db": {**pg.target(), "port": 1, "password_file": str(tmp_path / "pw")}},  # unreachable
        "jobs": {"ping": {"task": "postgres.ping", "target": "db",
                          "options": {"databases": [secret]}},  # the secret even appears in options
                 "fail": {"task": "debug.fail", "options": {"message": f"boom {secret}"}}},
    })
    res = cli(["--config", cfg, "run", "ping", "fail", "--json"])
    assert res.code == 1
    assert secret not in res.output
    hist = History(f"sqlite:///{tmp_path / 'history.db'}")
    dump = json.dumps([{"s": r.summary, "l": r.log_excerpt} for r in hist.runs()])
    dump += json.dumps([[f.message, f.subject] for r in hist.runs() for f in hist.findings_for(r.id)])
    assert secret not in dump and "***" in dump
    for rid in (r["run_id"] for r in res.json()):
        assert secret not in cli(["--config", cfg, "show", str(rid), "--json"]).out
    assert secret not in cli(["--config", cfg, "history", "--json"]).out


def test_cron_export_fires_when_the_daemon_would(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Each exported crontab line, evaluated as cron would (in its CRON_TZ), fires at the job's own occurrences:
    ``every …`` is anchored in UTC whatever the job's timezone (Asia/Kolkata is UTC+05:30).  Left out, with the
    reason: a job bound to a maintenance window ('upkeeper run' refuses it; cron cannot defer it), and cronsim's
    L and # (Debian cron refuses L, installing none of the lines, and reads MON#2 as every Monday)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from cronsim import CronSim

    from upkeeper.config.loader import load_config
    from upkeeper.core.jobs import build_setup

    jobs = {
        "two-hourly": {"task": "debug.noop", "schedule": "every 2h"},
        "daily": {"task": "debug.noop", "schedule": "every 1d"},
        "kolkata": {"task": "debug.noop", "schedule": "30 2 * * *"},
        "july": {"task": "debug.noop", "schedule": "0 3 * JUL *"},
        "bound": {"task": "debug.noop", "schedule": "0 3 * * *", "window": "nightly"},
    }
    windows = {"nightly": {"rrule": "FREQ=DAILY", "start": "23:00", "end": "01:00"}}
    config = make_config({"timezone": "Asia/Kolkata", "windows": windows, "jobs": jobs})
    setup = build_setup(load_config(config))
    text = cli(["--config", config, "cron", "export"]).out
    start = datetime(2026, 3, 1, tzinfo=UTC)
    tz = "UTC"
    seen = set()
    for line in text.splitlines():
        if line.startswith("CRON_TZ="):
            tz = line.removeprefix("CRON_TZ=")
        if not line or line.startswith(("#", "CRON_TZ=", "SHELL=")):
            continue
        fields = line.split()
        job = setup.jobs[fields[fields.index("run") + 1]]
        assert job.schedule is not None
        cron = CronSim(" ".join(fields[:5]), start.astimezone(ZoneInfo(tz)))
        assert [next(cron).astimezone(UTC) for _ in range(5)] == job.schedule.upcoming(start, 5), line
        seen.add(job.name)
    assert seen == {"two-hourly", "daily", "kolkata", "july"}
    assert "# bound: not exported: bound to maintenance window 'nightly'" in text

    res = cli(["--config", config, "cron", "export", "--systemd", "--output", tmp_path / "units"])
    assert res.code == 0, res.output
    assert "OnCalendar=*-*-* 00/2:00:00 UTC" in (tmp_path / "units" / "upkeeper-two-hourly.timer").read_text()
    assert "OnCalendar=*-*-* 02:30:00 Asia/Kolkata" in (tmp_path / "units" / "upkeeper-kolkata.timer").read_text()
    assert not (tmp_path / "units" / "upkeeper-bound.timer").exists()
    assert "bound: not exported" in res.output

    more = make_config({"jobs": {"last-day": {"task": "debug.noop", "schedule": "0 3 L * *"},
                                 "second-monday": {"task": "debug.noop", "schedule": "0 3 * * MON#2"}}},
                       name="more.yaml")
    text = cli(["--config", more, "cron", "export"]).out
    assert not [ln for ln in text.splitlines() if " run " in ln and not ln.startswith("#")]
    assert "# last-day: 'L *' (L, LW or #) has no equivalent in cron" in text
    assert "# second-monday: '* MON#2' (L, LW or #) has no equivalent in cron" in text


def test_history_of_a_job_no_longer_in_the_config(cli: Any, make_config: Any) -> None:
    """A job renamed or removed keeps its runs under its old name ('its history stays under the old name'):
    'history OLD' lists them (it said "no job named 'OLD'", exit 2); a name no run was ever recorded under is
    still an error with a suggestion."""
    cfg = make_config({"jobs": {"nightly": {"task": "debug.noop", "schedule": "@daily"}}})
    assert cli(["--config", cfg, "run", "nightly"]).code == 0
    cfg = make_config({"jobs": {"nightly-v2": {"task": "debug.noop", "schedule": "@daily"}}})
    res = cli(["--config", cfg, "history", "nightly", "--json"])
    assert res.code == 0, res.output
    assert [r["job"] for r in res.json()] == ["nightly"]
    assert "nightly" in cli(["--config", cfg, "history", "nightly"]).out
    typo = cli(["--config", cfg, "history", "nightly-v3"])
    assert typo.code == 2 and "no job named 'nightly-v3'" in typo.err and "Try: 'nightly-v2'" in typo.err
    # 'notify log --job' the same way: a job with a history is listed, a name never seen is an error naming the
    # configured jobs (it was an empty list, exit 0)
    res = cli(["--config", cfg, "notify", "log", "--job", "nightly", "--json"])
    assert res.code == 0 and isinstance(res.json(), list), res.output
    for name in ("nightly-v3", "nojob"):
        typo = cli(["--config", cfg, "notify", "log", "--job", name])
        assert typo.code == 2 and f"no job named {name!r}" in typo.err, typo.output
        assert "nightly-v2" in typo.err and "internal error" not in typo.err, typo.err


def test_cron_export_systemd_leaves_out_what_a_timer_cannot_express_and_writes_the_rest(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A schedule OnCalendar= cannot express (cronsim's L and #, a day-of-month OR weekday) is left out with a note
    on stderr, as a window-bound job is (docs/scheduling.md, 'Keeping cron'); the other jobs' units are written.
    One such job made the whole export fail (exit 2), so no job could be exported as a timer."""
    cfg = make_config({"jobs": {
        "last-day": {"task": "debug.noop", "schedule": "0 3 L * *"},
        "second-monday": {"task": "debug.noop", "schedule": "0 3 * * MON#2"},
        "first-or-monday": {"task": "debug.noop", "schedule": "0 3 1 * 1"},
        "nightly": {"task": "debug.noop", "schedule": "30 2 * * *"},
    }})
    out = tmp_path / "units"
    res = cli(["--config", cfg, "cron", "export", "--systemd", "--output", out])
    assert res.code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["upkeeper-nightly.service", "upkeeper-nightly.timer"]
    for job in ("last-day", "second-monday", "first-or-monday"):
        assert f"{job}: not exported: schedule" in res.err and "cannot be a systemd timer" in res.err, res.err
    printed = cli(["--config", cfg, "cron", "export", "--systemd"])
    assert printed.code == 0 and "# --- upkeeper-nightly.timer ---" in printed.out
    assert "upkeeper-last-day" not in printed.out
    crontab = cli(["--config", cfg, "cron", "export"]).out  # its comment no longer sends L and # to --systemd
    assert "# last-day: 'L *' (L, LW or #) has no equivalent in cron (nor in systemd timers); use 'upkeeper " \
           "daemon' for this job" in crontab, crontab


def test_status_next_run_of_a_window_bound_job_is_its_windows_opening(cli: Any, make_config: Any) -> None:
    """A job bound to a window starts only inside it (docs/windows.md): 'status' showed its next cron occurrence
    as its next run, a time at which it is deferred; it shows the opening the occurrence is deferred to."""
    cfg = make_config({
        "timezone": "UTC",
        "windows": {"launch": {"start": "2030-01-01 02:00", "duration": "1h"}},
        "jobs": {"bound": {"task": "debug.noop", "schedule": "@daily", "window": "launch"},
                 "free": {"task": "debug.noop", "schedule": "@daily"}},
    })
    res = cli(["--config", cfg, "status", "--json"])
    assert res.code == 0, res.output
    nxt = {j["job"]: j["next_run"] for j in res.json()["jobs"]}
    assert nxt["bound"] == "2030-01-01T02:00:00+00:00", nxt
    assert nxt["free"] < "2030", nxt
    assert "2030-01-01 02:00 UTC" in " ".join(cli(["--config", cfg, "status"]).out.split())


def test_status_next_run_of_a_job_with_a_planned_run_is_that_run(cli: Any, make_config: Any) -> None:
    """A planned run ('upkeeper run JOB --at TIME', which the daemon starts) is the job's next run: 'status' showed
    '-' for a job without a schedule."""
    cfg = make_config({"jobs": {"manual": {"task": "debug.noop"}}})
    planned = cli(["--config", cfg, "run", "manual", "--at", "+2h", "--json"])
    assert planned.code == 0, planned.output
    [run] = planned.json()
    [job] = cli(["--config", cfg, "status", "--json"]).json()["jobs"]
    assert job["next_run"] == run["due_at"], (job, run)
