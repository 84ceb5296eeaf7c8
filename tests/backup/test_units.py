"""Small units: stage checks (exit code and ERROR lines), manifest parsing of hostile input, set layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.backup.manifest import Manifest, id_time, new_backup_id, safe_component
from upkeeper.backup.pg import check_stage, stderr_errors
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.core.proc import ProcResult
from upkeeper.errors import BackupError


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


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.sampled_from(
        ["id", "kind", "target", "database", "started_at", "finished_at", "objects", "name", "size", "sha256",
         "format_version", "postgres"]), c, max_size=8)), max_leaves=20).map(lambda v: json.dumps(v).encode())))
def test_hostile_manifests_are_clear_errors(data: bytes) -> None:
    try:
        Manifest.from_json(data, "store:db/app/x/manifest.json")
    except BackupError as exc:
        assert exc.message


def test_manifest_round_trip() -> None:
    t = datetime(2026, 1, 2, tzinfo=UTC)
    m = Manifest(id=new_backup_id(t), kind="postgres", target="db", database="app", started_at=t, finished_at=t,
                 objects=[ObjectRecord("app.dump.zst.age", 10, "a" * 64, 40, encryption="age-x25519",
                                       role="database")],
                 details={"row_counts": {"public.users": 3}})
    back = Manifest.from_json(m.to_json())
    assert back.to_dict() == m.to_dict() and back.compression_ratio == 4.0
