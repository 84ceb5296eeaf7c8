"""Heavy libraries bound with upkeeper.lazy are imported on first use, and load_all imports them all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from upkeeper import lazy

SRC = Path(__file__).resolve().parents[1] / "src"


def _in_fresh_python(code: str) -> object:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_stand_in_imports_its_module_on_first_attribute_read() -> None:
    got = _in_fresh_python(
        "import sys, json\n"
        "from upkeeper import lazy\n"
        "m = lazy.module('json.tool')\n"
        "before = 'json.tool' in sys.modules\n"
        "f = m.main\n"
        "print(json.dumps([before, 'json.tool' in sys.modules, f is sys.modules['json.tool'].main]))\n"
    )
    assert got == [False, True, True]


def test_submodules_come_along_and_load_all_imports_every_stand_in() -> None:
    got = _in_fresh_python(
        "import sys, json\n"
        "from upkeeper import lazy\n"
        "e = lazy.module('email', 'mime.text')\n"
        "x = lazy.module('xml.dom')\n"
        "before = [n in sys.modules for n in ('email.mime.text', 'xml.dom')]\n"
        "lazy.load_all()\n"
        "after = [n in sys.modules for n in ('email.mime.text', 'xml.dom')]\n"
        "print(json.dumps([before, after, e.mime.text.MIMEText.__name__]))\n"
    )
    assert got == [[False, False], [True, True], "MIMEText"]


def test_load_all_imports_the_runs_tasks_libraries_first_and_stops_when_a_run_comes() -> None:
    """The worker of 'upkeeper run JOB' loads the stand-ins while it waits for the run: those of the job's task
    module first, and none once the run has come (``stop``): it was importing the other log tasks' parsers when a
    100 MB log's run came, and the run waited ~50 ms for them."""
    got = _in_fresh_python(
        "import sys, json, types\n"
        "from upkeeper import lazy\n"
        "for owner, lib in (('task_a', 'xml.dom'), ('task_b', 'email.mime.text'), ('task_c', 'json.tool')):\n"
        "    m = types.ModuleType(owner)\n"
        "    exec(f'from upkeeper import lazy\\nx = lazy.module({lib!r})', m.__dict__)\n"
        "order = []\n"
        "def stop():\n"
        "    order.append([n for n in ('xml.dom', 'email.mime.text', 'json.tool') if n in sys.modules])\n"
        "    return len(order) > 1\n"
        "lazy.load_all(first=['task_b'], stop=stop)\n"
        "print(json.dumps(order))\n"
    )
    # asked before each import: task_b's library came first, then the run came and nothing more was imported
    assert got == [[], ["email.mime.text"]]


def test_the_worker_stops_warming_when_a_message_waits() -> None:
    """worker.warm with a stop that is true at once imports nothing (not even the task modules' libraries), and
    does not open history."""
    got = _in_fresh_python(
        "import sys, json\n"
        "from upkeeper import lazy\n"
        "from upkeeper.core import worker\n"
        "x = lazy.module('xml.dom')\n"
        "worker.warm([], 'sqlite:////nonexistent-dir/h.db', stop=lambda: True)\n"
        "print(json.dumps(['xml.dom' in sys.modules]))\n"
    )
    assert got == [False]


def test_the_same_request_gives_the_same_stand_in() -> None:
    assert lazy.module("json") is lazy.module("json")
    assert lazy.module("json") is not lazy.module("json", "decoder")
    assert lazy.module("json").dumps([1]) == "[1]"


def test_validating_every_task_family_imports_no_client_library() -> None:
    """``upkeeper run`` validates all jobs in the CLI process; the worker is what talks to services."""
    got = _in_fresh_python(
        "import sys, json, pkgutil, importlib\n"
        "import upkeeper.tasks as T\n"
        "for m in pkgutil.walk_packages(T.__path__, 'upkeeper.tasks.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(n for n in ('psycopg', 'redis', 'httpx', 'dns.resolver', 'cryptography.x509')"
        " if n in sys.modules)))\n"
    )
    assert got == []


#: the backup modules that only runs use (dump, archive, upload, catalog, verification)
BACKUP_RUN_MODULES = ("upkeeper.backup.pg", "upkeeper.backup.manifest", "upkeeper.backup.sets",
                      "upkeeper.backup.pipeline", "upkeeper.backup.prune", "upkeeper.backup.files",
                      "upkeeper.backup.sqlite", "upkeeper.backup.rdb", "upkeeper.backup.catalog",
                      "upkeeper.backup.verify", "upkeeper.storage", "zstandard")


@pytest.mark.parametrize(("module", "cls", "options", "problems", "needed"), [
    ("postgres", "PostgresBackup", {}, ["storages"],
     ["upkeeper.backup.pg", "upkeeper.backup.pipeline", "upkeeper.backup.sets"]),
    ("files", "FilesBackup", {"set": "site", "secret_paths": [".env"]}, ["storages", "secret_paths"],
     ["upkeeper.backup.files", "upkeeper.backup.sets", "upkeeper.backup.sqlite"]),
    ("redis", "RedisBackup", {}, ["storages"],
     ["upkeeper.backup.pipeline", "upkeeper.backup.rdb", "upkeeper.backup.sets"]),
    ("verify", "BackupVerify", {"storage": "nowhere"}, ["storage"],
     ["upkeeper.backup.catalog", "upkeeper.backup.prune", "upkeeper.backup.verify"]),
])
def test_validating_a_backup_job_leaves_the_backup_to_the_worker(module: str, cls: str, options: dict[str, object],
                                                               problems: list[str], needed: list[str]) -> None:
    """The CLI imports each job's task module for its options and config_problems before it sends the run: the
    modules of the backup itself (pg_dump, tar, the pipeline, storages, manifests, catalog, test restores: 15-40 ms
    each task family) are the worker's, which loads them (lazy.load_all) before the run."""
    got = _in_fresh_python(
        "import sys, json\n"
        f"import upkeeper.tasks.backup.{module} as M\n"
        "from upkeeper import lazy\n"
        "from upkeeper.config.models import Config\n"
        f"heavy = {BACKUP_RUN_MODULES!r}\n"
        "cfg = Config.model_validate({'storages': {'s3': {'kind': 's3', 'bucket': 'b', 'endpoint_url': 'http://x'}}})\n"
        f"task = M.{cls}\n"
        f"problems = task.config_problems(task.Options.model_validate({options!r}), cfg)\n"
        "try:\n"
        "    task.Options.model_validate({'set': 'a/b'})\n"  # files.backup: not one key component
        "    refused = False\n"
        "except ValueError as exc:\n"
        "    refused = 'set name' in str(exc)\n"
        "early = sorted(n for n in heavy if n in sys.modules)\n"
        "lazy.load_all()\n"
        "print(json.dumps([early, [p[0] for p in problems], refused, sorted(n for n in heavy if n in sys.modules)]))\n"
    )
    assert isinstance(got, list)
    early, found, refused, loaded = got
    assert early == []
    assert found == problems  # the checks still work (e.g. the one refusing unencrypted remote copies)
    assert refused == (module == "files")  # files.backup's check of its set name still works
    assert set(needed) <= set(loaded)  # what the run needs, loaded by the worker before it


def test_load_all_leaves_a_missing_library_for_its_first_use() -> None:
    got = _in_fresh_python(
        "import json\n"
        "from upkeeper import lazy\n"
        "missing = lazy.module('upkeeper_no_such_library')\n"
        "ok = lazy.module('json.tool')\n"
        "lazy.load_all()\n"
        "try:\n"
        "    missing.anything\n"
        "    err = None\n"
        "except ModuleNotFoundError as exc:\n"
        "    err = exc.name\n"
        "print(json.dumps([err, ok.main.__name__]))\n"
    )
    assert got == ["upkeeper_no_such_library", "main"]


#: the log modules that only runs use (parsers and their patterns, the parallel reader, the HTML reports)
LOGS_RUN_MODULES = ("upkeeper.logs.access", "upkeeper.logs.classify", "upkeeper.logs.errorlog",
                    "upkeeper.logs.parallel", "upkeeper.logs.sources", "upkeeper.logs.report_html",
                    "upkeeper.logs.pglog", "upkeeper.logs.pgstruct", "upkeeper.logs.pgsyslog", "upkeeper.logs.sqlfp")


@pytest.mark.parametrize(("module", "cls", "options", "bad", "refusal", "needed"), [
    ("nginx", "NginxLogs",
     {"log_format": "main", "client_ip": "x_forwarded_for", "failed_statuses": "429,5xx",
      "login_paths": ["/login", {"path": "/api/*", "failure_status": 200}], "public_paths": ["/dl/*"]},
     {"failed_statuses": "5xx,60"}, "'60' (in '5xx,60') is not a status code",
     ["upkeeper.logs.access", "upkeeper.logs.parallel", "upkeeper.logs.report_html", "upkeeper.logs.sources"]),
    ("errors", "ErrorLogs", {"app_logs": ["/var/log/app/*.log"]}, {"rotated_dirs": ["/x"], "rotated": False},
     "rotated_dirs is not read with rotated: false",
     ["upkeeper.logs.errorlog", "upkeeper.logs.parallel", "upkeeper.logs.report_html", "upkeeper.logs.sources"]),
    ("postgres", "PostgresLogs", {"format": "csvlog"}, {"format": "stderr", "log_line_prefix": "%m %q"},
     "has no %p (process id)",
     ["upkeeper.logs.pglog", "upkeeper.logs.pgstruct", "upkeeper.logs.pgsyslog", "upkeeper.logs.parallel", "upkeeper.logs.report_html",
      "upkeeper.logs.sources"]),
])
def test_validating_a_logs_job_leaves_the_reading_to_the_worker(module: str, cls: str, options: dict[str, object],
                                                                bad: dict[str, object], refusal: str,
                                                                needed: list[str]) -> None:
    """The CLI imports each job's task module for its options before it sends the run: the log parsers (and their
    compiled patterns), the parallel reader and the HTML reports (20-60 ms each log task) are the worker's, which
    loads them (lazy.load_all) before the run; the options are still checked as before."""
    got = _in_fresh_python(
        "import sys, json\n"
        f"import upkeeper.tasks.logs.{module} as M\n"
        "from upkeeper import lazy\n"
        f"heavy = {LOGS_RUN_MODULES!r}\n"
        f"task = M.{cls}\n"
        f"task.Options.model_validate({options!r})\n"
        "early = sorted(n for n in heavy if n in sys.modules)\n"
        "try:\n"
        f"    task.Options.model_validate({bad!r})\n"
        "    refused = ''\n"
        "except ValueError as exc:\n"
        "    refused = str(exc)\n"
        "lazy.load_all()\n"
        "print(json.dumps([early, refused, sorted(n for n in heavy if n in sys.modules)]))\n"
    )
    assert isinstance(got, list)
    early, refused, loaded = got
    assert early == []
    assert refusal in refused  # the options' checks still work
    assert set(needed) <= set(loaded)  # what the run needs, loaded by the worker before it


#: what host and security checks (psutil, the kernel clock's ctypes binding) and the access-log trends (statistics)
#: import for their runs only
RUN_ONLY_LIBRARIES = ("psutil", "ctypes", "statistics", "upkeeper.tasks.host._clock")


@pytest.mark.parametrize(("module", "cls", "options", "needed"), [
    ("host.disk", "HostDisk", {}, ["psutil"]),
    ("host.health", "HostHealth", {}, ["psutil", "ctypes", "upkeeper.tasks.host._clock"]),
    ("host.process", "HostProcess", {"processes": [{"name": "nginx"}]}, ["psutil"]),
    ("security.audit", "SecurityAudit", {}, ["psutil"]),
    ("security.firewall", "SecurityFirewall", {}, ["psutil"]),
    ("security.processes", "SecurityProcesses", {}, ["psutil"]),
    ("logs.nginx", "NginxLogs", {"log_format": "combined"}, ["statistics"]),
])
def test_validating_a_job_leaves_its_run_libraries_to_the_worker(module: str, cls: str, options: dict[str, object],
                                                                needed: list[str]) -> None:
    """The CLI imports each job's task module for its options before it sends the run (every job of the config,
    not only the one run): psutil (~10 ms), ctypes (~4 ms) and statistics (~3 ms) are imported by the worker
    (lazy.load_all) before the run, not by the CLI on its way to sending it."""
    got = _in_fresh_python(
        "import sys, json\n"
        f"import upkeeper.tasks.{module} as M\n"
        "from upkeeper import lazy\n"
        f"heavy = {RUN_ONLY_LIBRARIES!r}\n"
        f"M.{cls}.Options.model_validate({options!r})\n"
        "early = sorted(n for n in heavy if n in sys.modules)\n"
        "lazy.load_all()\n"
        "print(json.dumps([early, sorted(n for n in heavy if n in sys.modules)]))\n"
    )
    assert isinstance(got, list)
    early, loaded = got
    assert early == []
    assert set(needed) <= set(loaded)
