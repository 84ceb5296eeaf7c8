"""Config loading: located errors, ${ENV}, *_file secrets, and fuzzing that never finds a traceback."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import invoke, write_yaml
from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.errors import ConfigError
from upkeeper.redact import redact

VALID: dict[str, Any] = {
    "version": 1,
    "timezone": "Europe/Berlin",
    "defaults": {"timeout": "30m", "retries": 1, "retry_delay": "1m", "catch_up": "latest"},
    "daemon": {"concurrency": 2},
    "targets": {
        "db": {"kind": "postgres", "host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "app"},
        "cache": {"kind": "redis", "host": "127.0.0.1", "port": 6379},
    },
    "storages": {"local": {"kind": "local", "path": "/var/backups/upkeeper"}},
    "jobs": {
        "vacuum": {"task": "postgres.vacuum", "target": "db", "schedule": "0 3 * * *",
                   "options": {"tables": ["public.users"], "lock_timeout": "10s"}},
        "ping": {"task": "postgres.ping", "target": "db", "schedule": "every 5m", "timezone": "UTC"},
        "disk": {"task": "host.disk", "schedule": "*/5 * * * *", "options": {"warning": 85}},
    },
}


def problems(text: str) -> list[str]:
    try:
        build_setup(load_text(text, "u.yaml"))
    except ConfigError as exc:
        return [p.render() + (f" | {p.hint}" if p.hint else "") for p in exc.problems]
    return []


def test_valid_config_loads_and_resolves() -> None:
    import io

    from ruamel.yaml import YAML

    buf = io.StringIO()
    YAML().dump(VALID, buf)
    setup = build_setup(load_text(buf.getvalue(), "u.yaml"))
    assert set(setup.jobs) == {"vacuum", "ping", "disk"}
    vac = setup.jobs["vacuum"]
    assert vac.timezone == "Europe/Berlin" and vac.retries == 1 and vac.timeout.total_seconds() == 1800
    assert vac.options.lock_timeout.total_seconds() == 10  # type: ignore[attr-defined]
    assert setup.jobs["disk"].target is not None and setup.jobs["disk"].target.kind == "host"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobs:\n  a:\n    task: postgres.vacum\n    target: db\n",
         r"u\.yaml:3: jobs -> a -> task: unknown task 'postgres\.vacum' \| Try: 'postgres\.vacuum'"),
        ("targets:\n  db: {kind: postgres}\njobs:\n  a:\n    task: postgres.vacuum\n    target: dbx\n",
         r"u\.yaml:6: jobs -> a -> target: unknown target 'dbx' \| Try: 'db'"),
        ("targets:\n  r: {kind: redis}\njobs:\n  a:\n    task: postgres.vacuum\n    target: r\n",
         r"jobs -> a -> target: task postgres\.vacuum works on postgres targets, but 'r' is a redis target"),
        ("jobs:\n  a:\n    task: postgres.vacuum\n",
         r"u\.yaml:2: jobs -> a: job needs a target of kind postgres"),
        ("targets:\n  db: {kind: postgres}\njobs:\n  a:\n    task: postgres.vacuum\n    target: db\n"
         "    options:\n      tabels: [x]\n",
         r"u\.yaml:8: jobs -> a -> options -> tabels: unknown key 'tabels' \| Try: 'tables'"),
        ("targets:\n  db: {kind: postgres}\njobs:\n  a:\n    task: postgres.vacuum\n    target: db\n"
         "    options:\n      lock_timeout: soon\n",
         r"u\.yaml:8: jobs -> a -> options -> lock_timeout: invalid duration 'soon'"),
        ("jobs:\n  a:\n    task: host.disk\n    schedule: '61 * * * *'\n",
         r"u\.yaml:4: jobs -> a -> schedule: .*minute"),
        ("jobs:\n  a:\n    task: host.disk\n    schedule: '@daily'\n    timezone: Europe/Berln\n",
         r"u\.yaml:5: jobs -> a -> timezone: unknown timezone 'Europe/Berln' \| Try: .*Europe/Berlin"),
        ("timezone: Mars/Olympus\n", r"u\.yaml:1: timezone: unknown timezone"),
        # a Slack webhook URL that is no URL was accepted, to fail at every delivery (a webhook channel's is checked)
        ("notifications:\n  channels:\n    chat: {kind: slack, webhook_url: hooks.slack.com/services/T/B/X}\n",
         r"u\.yaml:3: notifications -> channels -> chat: 'webhook_url' must start with https://"),
        # a channel written as its apprise URL: the path names the channel, not the union's tag ('-> apprise')
        ("notifications:\n  channels:\n    team: notaurl\n",
         r"u\.yaml:3: notifications -> channels -> team: 'url' must look like SCHEME://"),
        ("jobs:\n  a:\n    task: host.disk\n    retries: lots\n", r"u\.yaml:4: jobs -> a -> retries: input should be"),
        ("jobz: {}\n", r"u\.yaml:1: jobz: unknown key 'jobz' \| Try: 'jobs'"),
        ("targets:\n  db:\n    kind: postgress\n", r"u\.yaml:3: targets -> db -> kind: unknown kind 'postgress'"),
        ("jobs:\n  a:\n    task: host.disk\n  a:\n    task: host.disk\n", r"u\.yaml:4: YAML syntax error: duplicate key"),
        ("jobs:\n  a: [\n", r"u\.yaml:\d+: YAML syntax error"),
        ("- just\n- a list\n", r"the file must be a mapping"),
        # windows of runs read back longer than history retention keeps runs: both fields named, with the fix
        ("history_retention: {runs: 45d}\njobs:\n  c:\n    task: security.compliance\n",
         r"u\.yaml:\d+: jobs -> c -> options -> period: period 'previous_month' reads up to 62 days of runs back, "
         r"but history_retention -> runs keeps them 45d.* \| Try: history_retention -> runs: 62d"),
        ("history_retention: {runs: 14d}\njobs:\n  b:\n    task: host.disk\n    category: backup\n",
         r"notifications -> backup -> success_rate_window: the backup success rate is computed over notifications "
         r"-> backup -> success_rate_window \(30d\), but history_retention -> runs keeps runs 14d.* \| "
         r"Try: history_retention -> runs: 30d \(or longer\), or success_rate_window: 14d \(or shorter\)"),
    ],
)
def test_errors_name_file_line_and_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(re.search(expected, p) for p in found), found


def test_a_bad_timezone_does_not_hide_a_bad_schedule() -> None:
    """'config check' names every problem at once: with a misspelt timezone (the config's or the job's), an invalid
    cron expression was not reported until the timezone was fixed."""
    for text in ("timezone: Mars/Olympus\njobs:\n  a:\n    task: host.disk\n    schedule: '61 * * * *'\n",
                 "jobs:\n  a:\n    task: host.disk\n    schedule: '61 * * * *'\n    timezone: Mars/Olympus\n"):
        found = problems(text)
        assert any("timezone: unknown timezone 'Mars/Olympus'" in p for p in found), found
        assert any(re.search(r"u\.yaml:\d: jobs -> a -> schedule: invalid cron expression .*minute", p)
                   for p in found), found
    assert not any("schedule" in p for p in problems("timezone: Mars/Olympus\njobs:\n  a:\n    task: host.disk\n"
                                                     "    schedule: '0 3 * * *'\n"))


def test_retention_long_enough_for_the_windows_read_back_is_fine() -> None:
    assert problems("history_retention: {runs: 30d}\njobs:\n  c:\n    task: security.compliance\n"
                    "    options: {period: last_30_days}\n  b:\n    task: host.disk\n    category: backup\n") == []
    assert problems("history_retention: {runs: null}\njobs:\n  c:\n    task: security.compliance\n") == []
    # no backup job: no success rate is computed
    assert problems("history_retention: {runs: 14d}\njobs:\n  d:\n    task: host.disk\n") == []


def test_a_number_as_a_schedule_and_a_number_out_of_bounds_say_what_is_expected() -> None:
    """'schedule: 5' and 'retries: -1' said 'input should be a valid string' / '… greater than or equal to 0' with no
    hint: the first now says what a schedule looks like (and that it is text), the second the field's whole range."""
    [schedule, retries] = problems("jobs:\n  a:\n    task: debug.noop\n    schedule: 5\n    retries: -1\n")
    assert schedule.startswith("u.yaml:4: jobs -> a -> schedule: input should be a valid string | Try: "), schedule
    assert "in quotes" in schedule and "'0 3 * * *'" in schedule and "'@daily'" in schedule \
        and "'every 5m'" in schedule, schedule
    assert retries == ("u.yaml:5: jobs -> a -> retries: input should be greater than or equal to 0 | "
                       "Try: retries: a whole number from 0 to 20"), retries
    [too_many] = problems("defaults:\n  retries: 21\njobs: {a: {task: debug.noop}}\n")
    assert too_many.endswith("| Try: retries: a whole number from 0 to 20"), too_many
    # what each schedule form the hint shows is accepted
    for form in ("'*/5 * * * *'", "'0 3 * * *'", "'@daily'", "'every 5m'"):
        assert problems(f"jobs:\n  a:\n    task: debug.noop\n    schedule: {form}\n") == [], form


def test_top_level_x_keys_are_ignored_and_hold_yaml_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A top-level 'x-…' key (docker-compose's extension fields, the usual place for YAML anchors) was refused as an
    unknown key.  It is ignored now, its anchors merge where they are used, and a variable in it is read only there;
    any other unknown key is still refused, with a pointer to x-… when no known key is close."""
    monkeypatch.delenv("UPK_X_UNSET", raising=False)
    text = ("x-pg: &pg\n  kind: postgres\n  host: 10.0.0.5\n  password: ${UPK_X_UNSET}\n"
            "x-policy: &policy {timeout: 2h, retries: 3}\n"
            "targets:\n  db:\n    <<: *pg\n    password: s3cret-x\n"
            "jobs:\n  vac:\n    <<: *policy\n    task: postgres.vacuum\n    target: db\n")
    assert problems(text) == []
    cfg = load_text(text)
    assert cfg.targets["db"].host == "10.0.0.5"  # type: ignore[union-attr]
    assert cfg.jobs["vac"].timeout == timedelta(hours=2) and cfg.jobs["vac"].retries == 3
    # the same block under any other name is refused
    [common] = problems(text.replace("x-policy:", "common:"))
    assert common.startswith("u.yaml:5: common: unknown key 'common' | Try: one of version,"), common
    assert common.endswith("name it 'x-common' (top-level x-… keys are ignored)"), common
    [typo] = problems("tagets: {}\n")
    assert typo == "u.yaml:1: tagets: unknown key 'tagets' | Try: 'targets'", typo
    # only at the top level: inside a target, x-… stays an unknown key
    assert [p for p in problems("targets:\n  db: {kind: postgres, x-note: 1}\n") if "unknown key 'x-note'" in p]
    # editors read the same from the JSON Schema
    from upkeeper.core.schema import config_schema

    assert "^x-." in config_schema()["patternProperties"]


def test_a_problem_of_a_credential_field_is_printed_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'config check' printed 'targets -> db -> password: *** variable PGPASS is not set' (and '… password: ***
    should be a valid string'): the redactor took the message's first word after 'password:' for the password.
    The location and the message are redacted apart; a secret the message quotes is still masked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOPE_PW", raising=False)
    (tmp_path / "u.yaml").write_text("targets:\n  db:\n    kind: postgres\n    password: ${NOPE_PW}\n")
    res = invoke(["--config", "u.yaml", "config", "check"])
    assert res.code == 2
    assert "u.yaml:4: targets -> db -> password: environment variable NOPE_PW is not set" in res.err, res.err
    (tmp_path / "list.yaml").write_text("targets:\n  db:\n    kind: postgres\n    password: [a, b]\n")
    res = invoke(["--config", "list.yaml", "config", "check"])
    assert "list.yaml:4: targets -> db -> password: input should be a valid string" in res.err, res.err
    (tmp_path / "two.yaml").write_text("targets:\n  db:\n    kind: postgres\n    password: ${NOPE_PW}\n"
                                      "  cache:\n    kind: redis\n    password: ${NOPE_PW}\n")
    res = invoke(["--config", "two.yaml", "config", "check"])
    assert res.code == 2
    assert "two.yaml:4: targets -> db -> password: environment variable NOPE_PW is not set" in res.err, res.err
    assert "two.yaml:7: targets -> cache -> password: environment variable NOPE_PW is not set" in res.err, res.err
    # a credential the message itself carries stays masked
    (tmp_path / "key.yaml").write_text("backup:\n  encryption:\n    recipients: [AGE-SECRET-KEY-1QQQQQQQQQQQQ]\n"
                                      "jobs: {d: {task: host.disk}}\n")
    res = invoke(["--config", "key.yaml", "config", "check"])
    assert res.code == 2 and "QQQQQQQQQQQQ" not in res.output, res.output


def test_first_users_mistakes_get_a_message_that_says_how_to_fix_them() -> None:
    """Mistakes a first config has, and what 'config check' said of them before:
    a target or storage without 'kind' — 'Try: kind: one of' and nothing after it;
    an unquoted cron expression or alias — 'expected alphabetic or numeric character, but found ' '', to
    'check indentation … and quoting' (which is it?);
    a job's key dedented out of its job, an empty job — 'input should be a valid dictionary or instance of
    JobConfig' (pydantic's class name), with no hint at all."""
    assert problems("targets:\n  db: {host: 127.0.0.1}\n") == [
        "u.yaml:2: targets -> db -> kind: 'kind' is missing | "
        "Try: kind: one of 'postgres', 'redis', 'nginx', 'host', 'app', 'http'"]
    assert problems("storages:\n  nas: {path: /srv/backups}\n") == [
        "u.yaml:2: storages -> nas -> kind: 'kind' is missing | Try: kind: one of 'local', 's3', 'sftp'"]
    [star] = problems("jobs:\n  disk:\n    task: host.disk\n    schedule: */5 * * * *   # five minutes\n")
    assert star.startswith("u.yaml:4: YAML syntax error: "), star
    assert star.endswith("Try: quote the value — YAML reads a value starting with '*' as syntax, not text: "
                         'schedule: "*/5 * * * *"'), star
    [at] = problems("jobs:\n  disk:\n    task: host.disk\n    schedule: @daily\n")
    assert at.endswith('not text: schedule: "@daily"'), at
    [dedented] = problems("jobs:\n  disk:\n    task: host.disk\n  schedule: '@daily'\n")
    assert dedented == ("u.yaml:4: jobs -> schedule: expected a mapping (its keys indented below it), got text | "
                        "Try: indent 'schedule' under its entry: it is a key of each entry of 'jobs'"), dedented
    [empty] = problems("jobs:\n  disk:\n")
    assert empty == ("u.yaml:2: jobs -> disk: expected a mapping (its keys indented below it), got nothing | "
                     "Try: give it its keys, indented below it, or remove it"), empty
    # one item where a list belongs ('input should be a valid list', no hint)
    [one] = problems("targets:\n  db: {kind: postgres}\njobs:\n  v:\n    task: postgres.vacuum\n    target: db\n"
                     "    options:\n      tables: public.users\n")
    assert one == ("u.yaml:8: jobs -> v -> options -> tables: expected a list, got text | Try: a list, even of one "
                   "item: tables: [ITEM, …] on one line, or '- ITEM' lines indented below it"), one
    # a validator's own "Try:" is the hint, on its line, not the end of the message
    [within] = problems("storages:\n  l: {kind: local, path: /srv/b}\ntargets:\n  db: {kind: postgres}\n"
                        "jobs:\n  d:\n    task: postgres.backup\n    target: db\n"
                        "    options: {retention: {keep_within: 14 days}}\n")
    assert within.startswith("u.yaml:9: jobs -> d -> options -> retention -> keep_within: cannot read '14 days' "), within
    assert " | Try: restic's form, e.g. '14d'" in within and ". Try:" not in within, within
    # the value is never quoted back: it may be a secret (a URL with its password where a mapping belongs)
    [url] = problems("targets:\n  db: postgresql://app:hunter2@db/app\n")
    assert "hunter2" not in url and "got text" in url, url
    # a number or a yes/no value is said in a config file's words ("got a int"), the value not quoted either
    [num] = problems("targets:\n  db: {kind: postgres}\njobs:\n  v:\n    task: postgres.vacuum\n    target: db\n"
                     "    options:\n      tables: 904512\n")
    assert num.startswith("u.yaml:8: jobs -> v -> options -> tables: expected a list, got a number | ") and \
        "904512" not in num, num
    [flag] = problems("targets:\n  db: true\n")
    assert "expected a mapping (its keys indented below it), got a yes/no value" in flag, flag


def test_a_config_path_that_is_no_text_file_says_what_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config naming a directory said 'cannot read config file /etc/upkeeper: [Errno 21] Is a directory', and a
    file saved as Latin-1 (or a binary file) 'cannot read config file …: 'utf-8' codec can't decode byte 0xe9 in
    position 16', both with 'Try: check the path and permissions' — which were fine."""
    monkeypatch.chdir(tmp_path)
    res = invoke(["--config", str(tmp_path), "config", "check"])
    assert res.code == 2 and "internal error" not in res.err
    assert f"config file {tmp_path} is a directory" in res.err and f"--config {tmp_path / 'upkeeper.yaml'}" in res.err
    (tmp_path / "latin1.yaml").write_bytes("version: 1\n# café\njobs: {}\n".encode("latin-1"))
    res = invoke(["--config", "latin1.yaml", "config", "check"])
    assert res.code == 2
    assert "latin1.yaml:2: not UTF-8 text (byte 0xe9 at offset 16)" in res.err, res.err
    assert "Try: save the file as UTF-8" in res.err and "permissions" not in res.err
    [problem] = invoke(["--config", "latin1.yaml", "config", "check", "--json"]).json()["problems"]
    assert (problem["file"], problem["line"]) == ("latin1.yaml", 2)


def test_a_history_url_upkeeper_cannot_use_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'history: mysql://…' or a misspelt 'postgressql://…' passed 'config check' and was taken for a SQLite path:
    every command made a directory 'mysql:' beside the config with a database in it, so that each node kept its
    own history (no shared claim: a job fired once per node), without a word.  Now a located error; the URL's
    password is not repeated."""
    monkeypatch.chdir(tmp_path)
    for url in ("mysql://app:s3cretpw@db/upkeeper", "postgressql://app:s3cretpw@db/upkeeper",
                "PostgreSQL://app:s3cretpw@db/upkeeper"):
        (tmp_path / "u.yaml").write_text(f"history: '{url}'\njobs:\n  disk: {{task: host.disk}}\n")
        res = invoke(["--config", "u.yaml", "status"])
        scheme = url.split(":", 1)[0]
        assert res.code == 2, res.output
        assert f"u.yaml:1: history: unknown database URL scheme '{scheme}://'" in res.err, res.err
        assert "Try: postgresql://USER@HOST/DB" in res.err and "s3cretpw" not in res.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["u.yaml"]  # no 'mysql:' directory made
    for ok in ("postgres://db/upkeeper", "postgresql+psycopg://db/upkeeper", f"sqlite:///{tmp_path}/h.db",
               "history.db", str(tmp_path / "h2.db")):
        assert problems(f"history: '{ok}'\n") == [], ok


def test_a_zero_timeout_is_refused_and_a_jobs_zero_retry_delay_is_kept() -> None:
    """'timeout: 0' (read as 'no timeout' by many tools) meant three things: on a job, the task's default without a
    word (60 s for host.disk, not 'none'); in defaults, no timeout for the run but no wait at all for a target lock
    (the wait's deadline is now + timeout).  Now refused where written.  A job's 'retry_delay: 0' fell back to
    defaults.retry_delay (1 min) the same way; it now retries at once, as written."""
    assert problems("jobs:\n  d: {task: host.disk, timeout: 0}\n") == [
        "u.yaml:2: jobs -> d -> timeout: a timeout of 0 is not 'no timeout': every run has one | "
        "Try: a duration such as '6h' (at most 10 years)"]
    [defaults] = problems("defaults: {timeout: 0s}\njobs:\n  d: {task: host.disk}\n")
    assert defaults.startswith("u.yaml:1: defaults -> timeout: a timeout of 0 is not 'no timeout'"), defaults
    setup = build_setup(load_text("defaults: {retry_delay: 5m}\njobs:\n  d: {task: host.disk, retry_delay: 0}\n"
                                  "  e: {task: host.disk}\n", "u.yaml"))
    assert setup.jobs["d"].retry_delay.total_seconds() == 0 and setup.jobs["e"].retry_delay.total_seconds() == 300


def test_env_interpolation_and_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "10.1.2.3")
    cfg = load_text("targets:\n  db:\n    kind: postgres\n    host: ${DB_HOST}\n    port: ${DB_PORT:-6432}\n"
                    "    dbname: price$$list\n")
    t = cfg.targets["db"]
    assert (t.host, t.port, t.dbname) == ("10.1.2.3", 6432, "price$list")  # type: ignore[union-attr]
    monkeypatch.delenv("NOPE", raising=False)
    found = problems("targets:\n  db:\n    kind: postgres\n    password: ${NOPE}\n")
    assert any(re.search(r"u\.yaml:4: targets -> db -> password: environment variable NOPE is not set", p)
               for p in found), found


def test_secret_from_file_is_redacted_everywhere(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-Passw0rd\n")
    cfg = load_text(f"targets:\n  db:\n    kind: postgres\n    password_file: {secret}\n")
    t = cfg.targets["db"]
    assert t.secret("password") == "s3cr3t-Passw0rd"  # type: ignore[union-attr]
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in cfg.model_dump_json()
    assert redact("connect failed for s3cr3t-Passw0rd") == "connect failed for ***"
    found = problems(f"targets:\n  db:\n    kind: postgres\n    password: x\n    password_file: {secret}\n")
    assert any("give either password or password_file" in p for p in found), found
    found = problems("targets:\n  db:\n    kind: postgres\n    password_file: /nonexistent/pw\n")
    assert any("cannot read password_file /nonexistent/pw" in p for p in found), found


def test_an_empty_secret_is_a_config_error_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty secret file (or an empty ${VAR}) would mean "no secret": S3 then took AWS_SECRET_ACCESS_KEY from the
    environment without a word.  Every *_file secret says so instead."""
    empty = tmp_path / "secret"
    empty.write_text("\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    monkeypatch.setenv("EMPTY", "")
    s3 = "storages:\n  off:\n    kind: s3\n    bucket: b\n    access_key_id: AKIA\n"
    found = problems(f"{s3}    secret_access_key_file: {empty}\n")
    assert any(re.search(rf"u\.yaml:\d+: storages -> off: .*secret_access_key_file {empty} is empty", p)
               for p in found), found
    found = problems(f"{s3}    secret_access_key: ${{EMPTY}}\n")
    assert any("secret_access_key is empty" in p for p in found), found
    found = problems(f"targets:\n  db:\n    kind: postgres\n    password_file: {empty}\n")
    assert any(f"password_file {empty} is empty" in p for p in found), found
    found = problems("storages:\n  nas:\n    kind: sftp\n    host: h\n    user: u\n    key_file: /k\n    path: /p\n"
                     f"    key_passphrase_file: {empty}\n")
    assert any(f"key_passphrase_file {empty} is empty" in p for p in found), found


# -- fuzzing ------------------------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.text(max_size=20),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["61 * * * *", "every 0m", "every", "@sometimes", "Mars/Base", "-5", "1e400", "${UNSET_VAR}",
                     "postgres.nope", "10 PB", "kind", "", "  "]),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


ALL_PATHS = _paths(VALID)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, ...]]:
    data = copy.deepcopy(VALID)
    path = draw(st.sampled_from(ALL_PATHS))
    parent: Any = data
    for seg in path[:-1]:
        parent = parent[seg]
    action = draw(st.sampled_from(["replace", "delete", "add_key", "rename"]))
    last = path[-1]
    if action == "replace":
        parent[last] = draw(JUNK)
    elif action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "add_key":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
    elif action == "rename" and isinstance(parent, dict):
        parent[str(last) + draw(st.sampled_from(["x", "_", "s", "1"]))] = parent.pop(last)
    return data, path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_fuzzed_configs_never_traceback(tmp_path: Path, case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    data, _path = case
    cfg = write_yaml(tmp_path / "f.yaml", data)
    res = invoke(["--config", cfg, "config", "check"])
    assert "Traceback" not in res.output
    assert res.code in (0, 2), res.output
    if res.code == 2:
        assert res.err.startswith("Error:"), res.err
        # every problem names the file and a line, and (for field problems) the field path
        assert re.search(r"f\.yaml:\d+", res.err) or "does not exist" in res.err, res.err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 2000), junk=st.text(min_size=1, max_size=6))
def test_fuzzed_yaml_text_never_tracebacks(tmp_path: Path, pos: int, junk: str) -> None:
    base = (tmp_path / "base.yaml")
    write_yaml(base, VALID)
    text = base.read_text()
    pos %= len(text)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(text[:pos] + junk + text[pos:])
    res = invoke(["--config", cfg, "config", "check"])
    assert "Traceback" not in res.output
    assert res.code in (0, 2), res.output
    if res.code == 2:
        assert res.err.startswith("Error:")
        assert "t.yaml" in res.err


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30).map(str),
                 st.text(alphabet=st.sampled_from(list("0123456789.eE+-kKmMgGtTiIbB ")), max_size=12),
                 st.integers(300, 500).map(lambda n: '"' + "9" * n + '"')))
@example(float("inf"))  # YAML's .inf: OverflowError out of the loader
@example('"' + "9" * 400 + '"')  # float('9'*400) is inf: OverflowError
def test_a_size_is_a_value_or_a_located_problem(value: object) -> None:
    text = ("jobs:\n  m:\n    task: app.maintenance\n    target: a\n"
            f"    options: {{rotate_size: {'.inf' if value == float('inf') else value}}}\n"
            "targets:\n  a: {kind: app, root: /srv/app}\n")
    found = problems(text)  # (anything but a ConfigError fails the test)
    assert all(p.startswith("u.yaml:5: jobs -> m -> options -> rotate_size") for p in found), found
