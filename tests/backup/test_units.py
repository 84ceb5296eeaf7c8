"""Small units: stage checks (exit code and ERROR lines), manifest parsing of hostile input, set layout."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.backup.crypto import AgeProcess, Encryption
from upkeeper.backup.manifest import Manifest, id_time, new_backup_id, safe_component
from upkeeper.backup.pg import check_stage, stderr_errors
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.core.proc import ProcResult
from upkeeper.errors import BackupError

from .conftest import AgeKey


def test_error_on_stderr_fails_a_stage_even_with_exit_zero() -> None:
    ok = ProcResult(["/usr/bin/pg_dump"], 0, stderr="pg_dump: warning: there are circular foreign-key constraints "
                                                    "on this table: error_log\n")
    check_stage(ok, "dumping app")  # a warning (and a table named error_log) is not an error
    bad = ProcResult(["/usr/bin/pg_dump"], 0, stderr="pg_dump: error: query failed: ERROR:  permission denied\n")
    with pytest.raises(BackupError, match="pg_dump reported an error while dumping app"):
        check_stage(bad, "dumping app")
    died = ProcResult(["/usr/bin/pg_dump"], -9, stderr="")
    with pytest.raises(BackupError, match="killed by SIGKILL"):
        check_stage(died, "dumping app")
    assert stderr_errors("FATAL:  terminating connection due to administrator command") != []


def test_backup_ids_sort_by_time_and_round_trip() -> None:
    t = datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC)
    bid = new_backup_id(t)
    assert id_time(bid) == t and bid.startswith("20261123T020005Z-")
    assert id_time("not-an-id") is None
    assert safe_component("my/db") == "my_db" and safe_component("..") == "_.."


_VALID = {"format_version": 1, "id": "20260101T000000Z-abcd", "kind": "postgres", "target": "db", "database": "app",
          "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
          "objects": [{"name": "dump", "size": 1, "sha256": "00"}]}
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                       st.sampled_from(["0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "2026-01-01"]))
_json_value = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(
    ["id", "kind", "target", "database", "started_at", "finished_at", "objects", "name", "size", "sha256",
     "format_version", "postgres", "raw_size", "path", "type", "mode"]), c, max_size=8)), max_leaves=20)


@st.composite
def _edited_manifest(draw: st.DrawFn) -> bytes:
    """A valid manifest with some fields removed or replaced by anything JSON can hold."""
    d: dict[str, object] = json.loads(json.dumps(_VALID))
    for key in draw(st.lists(st.sampled_from([*_VALID, "objects.0.size", "objects.0.raw_size"]), max_size=3)):
        if key.startswith("objects.0."):
            d["objects"] = [{**_VALID["objects"][0], key.removeprefix("objects.0."): draw(_json_value)}]  # type: ignore[index]
        elif draw(st.booleans()):
            d.pop(key, None)
        else:
            d[key] = draw(_json_value)
    return json.dumps(d).encode()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json_value.map(lambda v: json.dumps(v).encode()), _edited_manifest()))
# each was an OverflowError or a RecursionError, not a BackupError: a sync, verify or prune over the storage ended
# in "internal error" instead of naming the manifest and going on with the others
@example(json.dumps({**_VALID, "format_version": float("inf")}).encode())
@example(json.dumps({**_VALID, "objects": [{"name": "dump", "size": float("inf"), "sha256": "00"}]}).encode())
@example(json.dumps({**_VALID, "started_at": "0001-01-01T00:00+01:00"}).encode())
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"a": ' * 5_000 + b"1" + b"}" * 5_000)
def test_hostile_manifests_are_clear_errors(data: bytes) -> None:
    where = "store:db/app/x/manifest.json"
    for file_lists in (True, False):
        try:
            Manifest.from_json(data, where, file_lists=file_lists)
        except BackupError as exc:
            assert exc.message.startswith(f"{where}: "), exc.message


def test_manifest_round_trip() -> None:
    t = datetime(2026, 1, 2, tzinfo=UTC)
    m = Manifest(id=new_backup_id(t), kind="postgres", target="db", database="app", started_at=t, finished_at=t,
                 objects=[ObjectRecord("app.dump.zst.age", 10, "a" * 64, 40, encryption="age-x25519",
                                       role="database")],
                 details={"row_counts": {"public.users": 3}})
    back = Manifest.from_json(m.to_json())
    assert back.to_dict() == m.to_dict() and back.compression_ratio == 4.0


_CREATE_SCRIPT = """SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
--
-- Name: {db}; Type: DATABASE; Schema: -; Owner: database
--

CREATE DATABASE {db} WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';


ALTER DATABASE {db} OWNER TO database;

\\connect {db}

--
-- Name: DATABASE {db}; Type: COMMENT; Schema: -; Owner: database
--

COMMENT ON DATABASE {db} IS 'see DATABASE {db} ;
DATABASE {db} in production';


--
-- Name: {db}; Type: DATABASE PROPERTIES; Schema: -; Owner: database
--

ALTER DATABASE {db} SET search_path TO 'shop', 'public';
ALTER ROLE database IN DATABASE {db} SET statement_timeout TO '5s';
ALTER ROLE {db} IN DATABASE {db} SET application_name TO 'ALTER DATABASE {db} SET x';

\\connect {db}

--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: database
--

CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $_$ SELECT 'GRANT ALL ON DATABASE {db} TO x;' $_$;

--
-- Name: DATABASE {db}; Type: ACL; Schema: -; Owner: database
--

REVOKE CONNECT,TEMPORARY ON DATABASE {db} FROM PUBLIC;
"""


@pytest.mark.parametrize("db", ["app", '"My ""App"""'])
def test_database_entries_are_renamed_where_they_name_the_database_never_in_a_literal(db: str) -> None:
    """pg_restore --create's entries for the database itself, rewritten for the name restored into: the name
    after DATABASE is replaced, a comment's text, a setting's value, a role named like a keyword and another
    entry (a function's body) are not.  (Each line was rewritten by a regular expression, inside literals too: a
    comment naming its database came back naming the restore's temporary database.)"""
    from upkeeper.backup.restore import database_level

    entries = database_level(_CREATE_SCRIPT.format(db=db), 'new"db', no_owner=False)
    new = '"new""db"'
    assert entries.create == (f"CREATE DATABASE {new} WITH TEMPLATE = template0 ENCODING = 'UTF8' "
                              "LOCALE_PROVIDER = libc LOCALE = 'C';")
    assert [s.text for s in entries.statements] == [
        f"ALTER DATABASE {new} OWNER TO database;",
        f"COMMENT ON DATABASE {new} IS 'see DATABASE {db} ;\nDATABASE {db} in production';",
        f"ALTER DATABASE {new} SET search_path TO 'shop', 'public';",
        f"ALTER ROLE database IN DATABASE {new} SET statement_timeout TO '5s';",
        f"ALTER ROLE {db} IN DATABASE {new} SET application_name TO 'ALTER DATABASE {db} SET x';",
        f"REVOKE CONNECT,TEMPORARY ON DATABASE {new} FROM PUBLIC;"]
    assert entries.settings.startswith("SET standard_conforming_strings = on;\nSELECT pg_catalog.set_config(")
    mine, others = entries.session_settings("database")
    assert [entries.setting_name(s) for s in mine] == ["search_path", "statement_timeout of role database"]
    assert others == ['My "App"' if db.startswith('"') else db]
    stripped = database_level(_CREATE_SCRIPT.format(db=db), "n", no_owner=True)
    assert not any(s.words(2) == ("ALTER", "ROLE") for s in stripped.statements)


def test_the_pipes_to_and_from_age_hold_a_mebibyte(age_key: AgeKey) -> None:
    """age's stdin and stdout carry the whole stream: at Linux's default 64 KiB, the task waits on them every
    64 KiB (and age on the task); they are widened to 1 MiB where the system allows it (pipe-max-size)."""
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < 1 << 20:
        pytest.skip("this system's pipe-max-size is below 1 MiB")
    age = AgeProcess(Encryption("x25519", (age_key.recipient,)).argv())
    try:
        assert [fcntl.fcntl(f.fileno(), 1032) for f in (age.stdin, age.stdout)] == [1 << 20] * 2  # F_GETPIPE_SZ
    finally:
        age.close()


def test_a_work_dir_that_cannot_be_made_is_a_setup_error_naming_the_setting(tmp_path: Path) -> None:
    """A backup.work_dir that does not exist (or is not writable) fails with what to do, not FileNotFoundError."""
    from upkeeper.backup.workdir import work_dir
    from upkeeper.config.backup import BackupSettings
    from upkeeper.errors import SetupError

    missing = tmp_path / "no-such-dir"
    with pytest.raises(SetupError, match=r"in .*no-such-dir \(backup\.work_dir\): .*create it"), \
            work_dir(BackupSettings(work_dir=str(missing)), "upkeeper-dump-"):
        pass
    with work_dir(BackupSettings(work_dir=str(tmp_path)), "upkeeper-dump-") as d:
        assert d.parent == tmp_path and d.is_dir()
    assert not d.exists()


def test_sqlite_files_archived_as_read_are_read_from_old_and_new_manifests() -> None:
    """A manifest written before upkeeper recorded them (no key), or with a record edited out of shape, lists
    none; a recorded one lists each file with its archive and reason."""
    from upkeeper.backup.sqlite import as_read_note, recorded_as_read

    item = {"archive": "files.tar.zst", "path": "srv/app/app.db", "reason": "no consistent copy could be made"}
    assert recorded_as_read({"paths": ["/srv/app"], "archives": {}}) == []
    assert recorded_as_read({"sqlite_not_snapshotted": "yes"}) == []
    assert recorded_as_read({"sqlite_not_snapshotted": [item, "x", {"reason": "no path"}]}) == [item]
    note = as_read_note([item] * 5)
    assert note.startswith("5 SQLite file(s) archived as read") and "srv/app/app.db and 2 more" in note, note


def test_a_backup_runs_catalog_needs_no_orm(tmp_path: Path) -> None:
    """The worker's warm-up for backup and verify jobs, and every catalog call a backup, its retention and a
    verification make, work in Core: SQLAlchemy's ORM and the mapped classes (~80 ms of the worker's start,
    which pg_dump waited for) are never imported.  The rows read are those the ORM class reads."""
    import subprocess
    import sys

    from upkeeper.backup.catalog import BackupRow, Catalog
    from upkeeper.core.history import History

    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(json.dumps({"jobs": {
        "db": {"task": "postgres.backup", "target": "db"}, "app": {"task": "files.backup", "target": "web"},
        "cache": {"task": "redis.backup", "target": "cache"}, "check": {"task": "backup.verify", "target": "db"}}}))
    url = f"sqlite:///{tmp_path / 'history.db'}"
    History(url).close()  # created (by Alembic) here
    code = f"""
import json, sys
from datetime import UTC, datetime
import upkeeper.core.history
from upkeeper.core.worker import hinted_modules, warm
modules = hinted_modules({str(cfg)!r}, ["db", "app", "cache", "check"])
warm(modules, None)
from upkeeper.backup.catalog import Catalog
from upkeeper.backup.manifest import Manifest
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.core.history import History
t = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
ms = [Manifest(id=f"20260501T03000{{i}}Z-abcdef", kind="postgres", target="db", database="app", started_at=t,
               finished_at=t, objects=[ObjectRecord(name="data.zst", size=5, sha256="0" * 64, raw_size=5)],
               sha256=str(i) * 64, json_size=100) for i in range(3)]
c = Catalog(History({url!r}))
c.warm()
for m in ms:
    c.record(m, ["s1"], run_id=7)
c.add_storage(ms[0].id, "s2")
c.mark_copies_proven(ms[0].id, ["s2"], t)
c.mark_verified(ms[0].id, True, "restored", 1.5)
c.remove_storage(ms[1].id, "s1")  # its last copy: the row goes
c.record(ms[2], ["s3"])  # found again (backups sync): storages merged, run kept
out = {{"modules": modules, "listed": [r.id for r in c.list(target="db", database="app", statuses=["complete"])],
       "proven": {{k: v.isoformat() for k, v in c.last_proven("db", "app").items()}},
       "found": [r.id for r in c.find(ms[0].id[:16])], "ids": sorted(c.ids()),
       "rows": [c.get(m.id).to_dict(full=True) for m in (ms[0], ms[2])],
       "orm": sorted(m for m in ("sqlalchemy.orm", "upkeeper.core.models") if m in sys.modules)}}
print(json.dumps(out))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    timeout=60).stdout)
    assert len(out["modules"]) == 4 and out["orm"] == []
    ids = ["20260501T030000Z-abcdef", "20260501T030001Z-abcdef", "20260501T030002Z-abcdef"]
    assert out["listed"] == [ids[2]] and out["found"] == [ids[0]] and out["ids"] == [ids[0], ids[2]]
    assert out["proven"] == {"s2": "2026-05-01T03:00:00+00:00"}
    first, third = out["rows"]
    assert (first["status"], first["storages"], first["restore_seconds"], first["manifest_sha256"]) == (
        "verified", ["s1", "s2"], 1.5, "0" * 64)
    assert (third["storages"], third["run_id"], third["manifest"]["objects"][0]["name"]) == (
        ["s1", "s3"], 7, "data.zst")
    history = History(url)
    try:
        catalog = Catalog(history)
        with history.session() as s:  # the ORM class maps the same table: the same rows, the same answers
            orm = {r.id: r.to_dict(full=True) for r in s.query(BackupRow)}
        assert orm == {ids[0]: first, ids[2]: third} == {i: catalog.get(i).to_dict(full=True)  # type: ignore[union-attr]
                                                         for i in (ids[0], ids[2])}
    finally:
        history.close()


_GLOBALS_SCRIPT = """\\restrict abc
SET default_transaction_read_only = off;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x;y';
COMMENT ON ROLE app IS 'ALTER ROLE "New ""one"" role" says nothing';
CREATE ROLE "New ""one"" role";
ALTER ROLE "New ""one"" role" WITH NOLOGIN;
ALTER ROLE app SET search_path TO 'app';
SECURITY LABEL FOR dummy ON ROLE app IS 'x';
GRANT grp TO app GRANTED BY postgres;
GRANT grp TO "New ""one"" role" GRANTED BY postgres;
CREATE TABLESPACE ts OWNER app LOCATION '/srv/ts';
GRANT ALL ON TABLESPACE ts TO app;
\\unrestrict abc
"""


def test_globals_skip_every_statement_about_a_role_the_server_has() -> None:
    """pg_dumpall's globals for a server that has role 'app' (and 'grp'): nothing sets up 'app' (its password,
    attributes, comment, label, settings, memberships); the role it lacks is created with its attributes and
    memberships; tablespaces, their privileges and psql's meta-commands stay."""
    from upkeeper.backup.restore import globals_for

    sql, skipped = globals_for(_GLOBALS_SCRIPT, {"app", "grp", "postgres"})
    assert skipped == ["app"]
    assert sql.splitlines() == [
        "\\restrict abc", "SET default_transaction_read_only = off;", 'CREATE ROLE "New ""one"" role";',
        'ALTER ROLE "New ""one"" role" WITH NOLOGIN;', 'GRANT grp TO "New ""one"" role" GRANTED BY postgres;',
        "CREATE TABLESPACE ts OWNER app LOCATION '/srv/ts';", "GRANT ALL ON TABLESPACE ts TO app;",
        "\\unrestrict abc"]
    assert globals_for(_GLOBALS_SCRIPT, set())[1] == []
