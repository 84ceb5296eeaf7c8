"""The 'backup:' config section: clear, located errors; init writes a config that loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upkeeper.core.initgen import Detected, render
from upkeeper.core.jobs import load_setup


def test_bad_recipient_is_a_located_error(cli: Any, make_config: Any) -> None:
    cfg = make_config({"backup": {"encryption": {"recipients": ["age1notakey"]}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2
    assert "backup -> encryption -> recipients" in r.err and "not an age X25519 public key" in r.err
    # one problem: the settings' mapping is never the union's other member ('encryption: none'), whose
    # "expected 'none'" was a second, misleading problem beside it
    assert "expected 'none'" not in r.err and "problems" not in r.err, r.err
    cfg = make_config({"backup": {"encryption": "nonee"}})  # a string: 'none' misspelt, that member is named
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2 and "expected 'none'" in r.err, r.err


def test_recipients_and_passphrase_together_are_refused(cli: Any, make_config: Any, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret-passphrase")
    cfg = make_config({"backup": {"encryption": {
        "recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
        "passphrase_file": str(pw)}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2 and "not both" in r.err and "expected 'none'" not in r.err, r.err
    assert "secret-passphrase" not in r.output


def test_encryption_none_and_retention_validate(cli: Any, make_config: Any) -> None:
    cfg = make_config({"backup": {"encryption": "none", "retention": {"keep_daily": 7, "keep_within": "2d",
                                                                       "timezone": "Europe/Berlin"}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 0, r.output
    cfg = make_config({"backup": {"retention": {"keep_daily": -2}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2 and "keep_daily" in r.err


def test_init_output_with_backup_jobs_loads(tmp_path: Path) -> None:
    text = render(Detected(postgres={"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "app"},
                           redis={"host": "127.0.0.1", "port": 6379}))
    path = tmp_path / "upkeeper.yaml"
    path.write_text(text)
    setup = load_setup(path)
    assert {"db-backup", "backup-verify", "cache-backup"} <= set(setup.jobs)
    assert setup.jobs["db-backup"].options.model_dump()["format"] == "custom"
    assert setup.config.backup.retention.keep_daily == 14 and "local" in setup.config.storages


def test_unknown_retention_timezone_is_a_located_error(cli: Any, make_config: Any) -> None:
    """A misspelt zone is caught by 'config check', in backup.retention and in a job's own retention,
    not after a backup was stored (where it used to fail the run and skip the remaining databases)."""
    cfg = make_config({"backup": {"retention": {"timezone": "Europe/Berln"}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    assert "backup -> retention -> timezone" in r.err and "Europe/Berlin" in r.err  # names the field, suggests
    cfg = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1"}},
                       "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                                              "options": {"retention": {"timezone": "Mars/Olympus"}}}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    assert "db-backup" in r.err and "retention" in r.err and "Mars/Olympus" in r.err


def test_keep_within_minutes_are_refused_with_the_field_named(cli: Any, make_config: Any) -> None:
    """'90min' would have been 90 minutes of keep_within; restic has no minutes, and 'm' is months there."""
    cfg = make_config({"backup": {"encryption": "none", "retention": {"keep_within": "90min"}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    assert "keep_within" in r.err and "m (months)" in r.err and "Traceback" not in r.output
    cfg = make_config({"backup": {"encryption": "none", "retention": {"keep_within": "1y6m"}}})
    assert cli(["--config", cfg, "config", "check"]).code == 0


def test_an_empty_passphrase_file_is_refused(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """age given an empty passphrase makes one up, prints it to its terminal and encrypts with it: the backup
    would be stored, reported ok, and nobody could ever decrypt it.  An empty passphrase file is a config error."""
    for content in ("", "\n"):
        pw = tmp_path / "pw"
        pw.write_text(content)
        cfg = make_config({"backup": {"encryption": {"passphrase_file": str(pw)}}})
        r = cli(["--config", cfg, "config", "check"])
        assert r.code == 2, r.output
        assert "backup -> encryption" in r.err and "empty" in r.err, r.err


def test_unknown_storage_names_and_verify_references_are_located_errors(cli: Any, make_config: Any,
                                                                        tmp_path: Path) -> None:
    """A misspelt storage (backup.storages, a backup job's storages, verify's storage), verify's scope 'id'
    without backup_id and a scratch_target that is no postgres target: 'config check' said OK and every run
    failed.  Now each is one located problem with a suggestion."""
    cfg = make_config({
        "targets": {"db": {"kind": "postgres", "host": "127.0.0.1"}, "cache": {"kind": "redis"},
                    "app": {"kind": "app", "root": str(tmp_path)}},
        "storages": {"local": {"kind": "local", "path": str(tmp_path)}},
        "backup": {"storages": ["lcal"]},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db", "options": {"storages": ["offsite"]}},
                 "cache-backup": {"task": "redis.backup", "target": "cache", "options": {"storages": ["locl"]}},
                 "app-backup": {"task": "files.backup", "target": "app", "options": {"storages": ["locall"]}},
                 "verify": {"task": "backup.verify", "target": "db",
                            "options": {"scope": "id", "storage": "locl", "scratch_target": "cache"}}}})
    r = cli(["--config", cfg, "config", "check"])
    err = " ".join(r.err.split())
    assert r.code == 2, r.output
    assert "backup -> storages -> 0: unknown storage 'lcal' Try: 'local'" in err, err
    assert "jobs -> db-backup -> options -> storages: unknown storage 'offsite' Try: one of the storages (local)" \
        in err, err
    assert "jobs -> cache-backup -> options -> storages: unknown storage 'locl' Try: 'local'" in err, err
    assert "jobs -> app-backup -> options -> storages: unknown storage 'locall' Try: 'local'" in err, err
    assert "jobs -> verify -> options -> storage: unknown storage 'locl' Try: 'local'" in err, err
    assert "jobs -> verify -> options -> backup_id: scope 'id' needs backup_id" in err, err
    assert "jobs -> verify -> options -> scratch_target: scratch_target 'cache' is not a postgres target " \
        "Try: one of db" in err, err
    fixed = make_config({"targets": {"db": {"kind": "postgres", "host": "127.0.0.1"}},
                         "storages": {"local": {"kind": "local", "path": str(tmp_path)}},
                         "backup": {"storages": ["local"]},
                         "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                                                "options": {"storages": ["local"]}},
                                  "verify": {"task": "backup.verify", "target": "db",
                                             "options": {"scope": "id", "backup_id": "x", "storage": "local",
                                                         "scratch_target": "db"}}}}, name="fixed.yaml")
    assert cli(["--config", fixed, "config", "check"]).code == 0


def test_an_age_secret_key_given_as_recipient_is_refused_without_printing_it(cli: Any, make_config: Any,
                                                                            tmp_path: Path) -> None:
    """Pasting the identity (AGE-SECRET-KEY-1…) where the public key belongs is a common slip: the error says so
    and never prints the key — nor does any other message that quotes one (redact masks the shape)."""
    import subprocess

    from upkeeper.backup.crypto import load_recipients_file
    from upkeeper.errors import BackupError
    from upkeeper.redact import redact

    subprocess.run(["age-keygen", "-o", str(tmp_path / "key.txt")], check=True, capture_output=True)
    identity = next(ln for ln in (tmp_path / "key.txt").read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    data = identity.removeprefix("AGE-SECRET-KEY-1")
    cfg = make_config({"backup": {"encryption": {"recipients": [identity]}}})
    for extra in ([], ["--json"]):
        r = cli(["--config", cfg, "config", "check", *extra])
        assert r.code == 2 and "age secret key" in r.output and "age-keygen -y" in r.output, r.output
        assert data[:8] not in r.output, r.output
    (tmp_path / "recipients.txt").write_text(identity + "\n")
    try:
        load_recipients_file(str(tmp_path / "recipients.txt"))
    except BackupError as exc:
        assert "age secret key" in exc.message and data[:4] not in exc.message + str(exc.hint), exc.message
    else:
        raise AssertionError("a secret key was taken as a recipient")
    assert redact(f"bad recipient {identity!r}") == "bad recipient 'AGE-SECRET-KEY-1***'"


def test_smoke_checks_of_the_wrong_kind_or_shape_are_located_config_errors(cli: Any, make_config: Any) -> None:
    """`config check` said OK to a verify job that every run then refused (SQL checks on a redis target,
    redis_checks on a postgres one), and to redis_checks that are no command (empty: counted as 'passed' while
    nothing ran; unclosed quotes: the backup marked verify-failed for a typo)."""
    targets = {"cache": {"kind": "redis", "host": "127.0.0.1", "port": 6379},
               "db": {"kind": "postgres", "host": "127.0.0.1"}}
    cases = (("cache", {"checks": ["select 1"]}, "options -> checks: checks and amcheck are for PostgreSQL"),
             ("cache", {"amcheck": True}, "options -> amcheck: checks and amcheck are for PostgreSQL"),
             ("db", {"redis_checks": ["EXISTS k"]}, "options -> redis_checks: redis_checks are for Redis backups"),
             ("cache", {"redis_checks": ["EXISTS k", " "]}, "options -> redis_checks: an empty check runs nothing"),
             ("cache", {"redis_checks": ['AUTH app "Sm0keSecret']}, "redis_checks: 'AUTH app ***' is no Redis "
              "command line: No closing quotation"))
    for target, options, said in cases:
        cfg = make_config({"targets": targets,
                           "jobs": {"v": {"task": "backup.verify", "target": target, "options": options}}})
        r = cli(["--config", cfg, "config", "check"])
        assert r.code == 2 and said in " ".join(r.err.split()), (options, r.output)
        assert "jobs -> v -> options" in r.err and "Sm0keSecret" not in r.output, r.output
    cfg = make_config({"targets": targets, "jobs": {
        "v": {"task": "backup.verify", "target": "cache", "options": {"redis_checks": ["SELECT 3", "DBSIZE"]}},
        "w": {"task": "backup.verify", "target": "db", "options": {"checks": ["select true"], "amcheck": True}}}})
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 0, r.output
