"""``upkeeper cancel``: a run waiting to start (planned, a retry, deferred) is recorded skipped with who and why, in
the audit trail; the stakeholders told of a planned run are told it was cancelled; a run that started is not touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from upkeeper.core.history import History, NewRun
from upkeeper.notify.events import Payload

DISK_OK = {"task": "host.disk", "options": {"mounts": ["/"], "warning": 99.9, "critical": 100}}


def test_cancel_a_planned_run(cli: Any, make_config: Any, webhook_receiver: Any, tmp_path: Path) -> None:
    cfg = make_config({"notifications": {"channels": {"team": {"kind": "webhook", "url": webhook_receiver.url + "/h"}}},
                       "jobs": {"disk": DISK_OK, "other": DISK_OK}})
    res = cli(["--config", cfg, "run", "disk", "other", "--at", "+2h", "--json"])
    assert res.code == 0, res.output
    ids = {p["job"]: p["run_id"] for p in res.json()}
    [announced] = webhook_receiver.wait_for(1)
    text = Payload.model_validate(announced.json()).text
    assert f"'upkeeper cancel {ids['disk']} {ids['other']}' cancels it." in text, text
    res = cli(["--config", cfg, "cancel", str(ids["disk"]), "--reason", "wrong night"])
    assert res.code == 0, res.output
    assert f"run {ids['disk']} (disk): planned run cancelled by " in res.out and "wrong night" in res.out, res.out
    h = History("sqlite:///" + str(tmp_path / "history.db"))
    row = h.get_run(ids["disk"])
    assert row is not None and row.status == "skipped" and row.finished_at is not None
    assert row.summary.startswith("planned run cancelled by ") and row.summary.endswith(": wrong night"), row.summary
    assert row.details["cancel_reason"] == "wrong night" and row.details["planned_by"], row.details
    other = h.get_run(ids["other"])
    assert other is not None and other.status == "pending"  # only what was named
    [entry] = [a for a in h.audit_entries() if a.action == "cancel-run"]
    assert entry.job == "disk" and entry.details["run_id"] == ids["disk"] and entry.details["reason"] == "wrong night"
    titles = [Payload.model_validate(q.json()).title for q in webhook_receiver.wait_for(2)]
    assert titles[-1].startswith("Planned run of disk at ") and titles[-1].endswith(" cancelled"), titles
    # no daemon claims it any more
    assert h.claim_pending(datetime.now(UTC) + timedelta(hours=3), "d:1", "n", ["disk"]) == []
    # a run that is no longer pending, or unknown: exit 2, and nothing is cancelled
    res = cli(["--config", cfg, "cancel", str(ids["other"]), str(ids["disk"])])
    assert res.code == 2 and f"run {ids['disk']} (disk) is skipped, not waiting to start" in res.err, res.output
    assert h.get_run(ids["other"]).status == "pending"  # type: ignore[union-attr]
    res = cli(["--config", cfg, "cancel", "99999"])
    assert res.code == 2 and "no run with id 99999" in res.err
    res = cli(["--config", cfg, "cancel", str(ids["other"]), "--json"])
    assert res.code == 0, res.output
    [r] = res.json()
    assert (r["run_id"], r["cancelled"], r["status"], r["trigger"]) == (ids["other"], True, "skipped", "planned"), r


def test_a_run_claimed_as_it_is_cancelled_runs(tmp_path: Path) -> None:
    """Compare-and-set: a daemon that claimed the pending run first has it; the cancel says so (False)."""
    h = History("sqlite:///" + str(tmp_path / "h.db"))
    now = datetime.now(UTC)
    rid = h.create_run(NewRun(job="j", task="debug.noop", target=None, scheduled_for=now, due_at=now,
                              trigger="retry", status="pending", summary="retry 2"), "d:1", "n")
    assert rid is not None
    [claimed] = h.claim_pending(now + timedelta(seconds=1), "d:1", "n", ["j"])
    assert claimed.id == rid
    assert h.cancel_pending(rid, now, "retry cancelled by alice", {}) is False
    row = h.get_run(rid)
    assert row is not None and row.status == "queued"
