"""logs.nginx traffic spikes: the busiest hour a run read against the usual busiest hour of a day."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _day(day: int, busy: int, quiet: int = 2) -> str:
    """A day of traffic: a busy hour at 14:00 and quiet hours from 00:00 to 09:00."""
    lines = []
    for hour in range(10):
        for i in range(quiet):
            lines.append(f'192.0.2.{i + 1} - - [{day:02d}/Mar/2024:{hour:02d}:{i:02d}:00 +0000] "GET / HTTP/1.1" '
                         f'200 5 "-" "Mozilla/5.0" 0.010\n')
    for i in range(busy):
        lines.append(f'198.51.100.{i % 200 + 1} - - [{day:02d}/Mar/2024:14:{i % 60:02d}:{i // 60:02d} +0000] '
                     f'"GET /shop HTTP/1.1" 200 5 "-" "Mozilla/5.0" 0.010\n')
    return "".join(lines)


def _spike_job(cli: Any, make_config: Any, tmp_path: Path) -> tuple[Path, Callable[[], dict[str, Any]]]:
    """An access log (empty yet) and a function running the logs.nginx job on it (spikes judged after 2 runs)
    that returns the run's JSON."""
    log = tmp_path / "access.log"
    cfg = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(log), "error_log": str(tmp_path / "error.log")}},
        "jobs": {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
            "log_format": "combined_timed", "report_dir": str(tmp_path / "reports"), "spike_min_runs": 2}}},
    })

    def run() -> dict[str, Any]:
        r = cli(["--config", cfg, "run", "log-analysis", "--json"])
        assert r.code in (0, 1), r.output
        out: dict[str, Any] = r.json()[0]
        return out

    return log, run


def test_a_daily_peak_is_no_spike_but_a_peak_ten_times_higher_is(cli: Any, make_config: Any, tmp_path: Path) -> None:
    log, run = _spike_job(cli, make_config, tmp_path)

    def spikes(r: dict[str, Any]) -> list[dict[str, Any]]:
        return [f for f in r["findings"] if f["check"] == "logs.nginx.traffic_spike"]

    # each run reads one new day: the 14:00 peak (60) is 6x that day's mean hour (~8.2), as on any real site
    with open(log, "a") as fh:
        fh.write(_day(1, 60))
    assert spikes(run()) == []
    for day in (2, 3):
        with open(log, "a") as fh:
            fh.write(_day(day, 60))
        r = run()
        assert r["metrics"]["requests"] == 80 and spikes(r) == [], spikes(r)
    with open(log, "a") as fh:
        fh.write(_day(4, 600))
    [spike] = spikes(run())
    assert spike["value"] == 600 and "10.0x the usual 60 in the busiest hour" in spike["message"], spike


def test_a_line_dated_in_the_far_future_neither_erases_the_hourly_counts_nor_breaks_the_next_runs(
        cli: Any, make_config: Any, tmp_path: Path) -> None:
    # a clock glitch or a forged line dated 2099: the hourly counts kept in the job's state were trimmed to
    # the 35 days before the newest hour seen, so that one line dropped every real hour, and every later run
    # failed with a KeyError on an hour it had just dropped
    log, run_ = _spike_job(cli, make_config, tmp_path)

    def run() -> dict[str, Any]:
        out = run_()
        assert out["status"] in ("ok", "warn"), out
        return out

    def checks(r: dict[str, Any], name: str) -> list[dict[str, Any]]:
        return [f for f in r["findings"] if f["check"] == name]

    for day in (1, 2, 3):
        with open(log, "a") as fh:
            fh.write(_day(day, 60))
        run()
    with open(log, "a") as fh:
        fh.write('203.0.113.9 - - [01/Jan/2099:00:00:00 +0000] "GET /x HTTP/1.1" 200 5 "-" "curl/8" 0.010\n')
    r = run()
    [future] = checks(r, "logs.nginx.future_lines")
    assert future["value"] == 1 and "2099-01-01 00:00" in future["message"], future
    assert checks(r, "logs.nginx.traffic_spike") == []
    with open(log, "a") as fh:
        fh.write(_day(4, 600))
    r = run()
    assert checks(r, "logs.nginx.check_failed") == [] and checks(r, "logs.nginx.future_lines") == [], r["findings"]
    [spike] = checks(r, "logs.nginx.traffic_spike")
    assert spike["value"] == 600 and "10.0x the usual 60 in the busiest hour" in spike["message"], spike


def test_an_ordinary_weekday_after_a_weekend_in_the_first_week_is_no_spike(cli: Any, make_config: Any,
                                                                           tmp_path: Path) -> None:
    """A job set up on a Thursday of a site busy on weekdays: by Monday it knows a Friday (peak 60), a Saturday and a
    Sunday (peak 15); the median of those, 15, made Monday's ordinary peak of 60 a 4x 'spike'. With fewer than 7 days
    known the baseline is the busiest of them; a real burst (600) is still a spike."""
    log, run = _spike_job(cli, make_config, tmp_path)

    def spikes(r: dict[str, Any]) -> list[dict[str, Any]]:
        return [f for f in r["findings"] if f["check"] == "logs.nginx.traffic_spike"]

    for day, busy in ((7, 60), (8, 60), (9, 15), (10, 15), (11, 60)):  # Thu 7 (left out: the first) … Mon 11 Mar 2024
        with open(log, "a") as fh:
            fh.write(_day(day, busy))
        r = run()
        assert spikes(r) == [], (day, spikes(r))
    with open(log, "a") as fh:
        fh.write(_day(12, 600))
    [spike] = spikes(run())
    assert spike["value"] == 600 and "10.0x the usual 60 in the busiest hour of a day (the busiest of the 4 day(s) " \
        "before: fewer than 7 known yet)" in spike["message"], spike


def test_the_first_workday_after_a_quiet_week_is_no_spike(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """After a quiet week (a holiday: every day as quiet as a Sunday), the median of the 7 days before was a quiet
    day's, and the first ordinary Monday, 4x that, a traffic spike. The same day of the week in the weeks kept is
    now a baseline too; a real burst the day after is still one, judged against the Tuesdays before."""
    log, run = _spike_job(cli, make_config, tmp_path)
    # March 2024: the 1st is a Friday; weekdays peak at 60, weekends at 15; the week of Monday the 18th a holiday
    def busy(day: int) -> int:
        return 15 if day % 7 in (2, 3) or 18 <= day <= 24 else 60

    for days in (range(1, 13), range(13, 25)):
        with open(log, "a") as fh:
            fh.write("".join(_day(d, busy(d)) for d in days))
        run()
    with open(log, "a") as fh:
        fh.write(_day(25, 60))  # Monday
    r = run()
    assert [f for f in r["findings"] if f["check"] == "logs.nginx.traffic_spike"] == []
    with open(log, "a") as fh:
        fh.write(_day(26, 600))  # Tuesday: a real burst
    [spike] = [f for f in run()["findings"] if f["check"] == "logs.nginx.traffic_spike"]
    assert "10.0x the usual 60 in the busiest hour of a day (median of the 3 Tuesdays before" in spike["message"], spike
