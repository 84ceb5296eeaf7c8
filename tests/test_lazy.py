"""Heavy libraries bound with upkeeper.lazy are imported on first use, and load_all imports them all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_validating_a_postgres_backup_job_leaves_the_dump_to_the_worker() -> None:
    """The CLI imports postgres.backup's module for the job's options and config_problems before it sends the
    run: the dump's modules (pg_dump, the pipeline, storages, manifests, pruning: ~25 ms) are the worker's."""
    got = _in_fresh_python(
        "import sys, json\n"
        "import upkeeper.tasks.backup.postgres as P\n"
        "from upkeeper.config.models import Config\n"
        "heavy = ('upkeeper.backup.pg', 'upkeeper.backup.manifest', 'upkeeper.backup.sets', 'upkeeper.backup.pipeline',"
        " 'upkeeper.backup.prune', 'upkeeper.storage', 'zstandard')\n"
        "cfg = Config.model_validate({'storages': {'s3': {'kind': 's3', 'bucket': 'b', 'endpoint_url': 'http://x'}}})\n"
        "problems = P.PostgresBackup.config_problems(P.PostgresBackupOptions(), cfg)\n"
        "print(json.dumps([sorted(n for n in heavy if n in sys.modules), [p[0] for p in problems]]))\n"
    )
    assert got == [[], ["storages"]]  # the check that refuses unencrypted remote copies still works


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
