"""docs/restore-without-upkeeper.md, followed literally: its PostgreSQL commands, run one by one with only
age, zstd, sha256sum and the PostgreSQL client tools, restore a backup that upkeeper took."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.seed import seed

from .conftest import SMALL, AgeKey

DOC = Path(__file__).resolve().parents[2] / "docs" / "restore-without-upkeeper.md"


def section_commands(title_prefix: str) -> list[str]:
    text = DOC.read_text()
    start = text.index(f"## {title_prefix}")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end], re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.strip()]


def run_line(line: str, cwd: Path, env: dict[str, str]) -> tuple[Path, str]:
    """One shell line without a shell: 'cd', pipes and '>' are wired here; $VARS are expanded."""
    words = [os.path.expandvars(w) if "$" in w else w for w in shlex.split(line, comments=True)]
    for k, v in env.items():
        words = [w.replace(f"${k}", v) for w in words]
    if words[0] == "cd":
        return Path(words[1]), ""
    out_file = None
    if ">" in words:
        i = words.index(">")
        out_file, words = words[i + 1], words[:i]
    stages: list[list[str]] = [[]]
    for w in words:
        if w == "|":
            stages.append([])
        else:
            stages[-1].append(w)
    prev = None
    procs = []
    for n, argv in enumerate(stages):
        last = n == len(stages) - 1
        stdout: Any = subprocess.PIPE
        if last and out_file:
            stdout = open(cwd / out_file, "wb")  # noqa: SIM115
        errf = tempfile.TemporaryFile()  # noqa: SIM115
        p = subprocess.Popen(argv, stdin=prev, stdout=stdout, stderr=errf, cwd=cwd, env={**os.environ, **env})
        if prev is not None:
            prev.close()
        prev = p.stdout
        procs.append((p, stdout, errf))
    out = procs[-1][0].communicate()[0] if not out_file else b""
    for p, so, errf in procs:
        p.wait()
        errf.seek(0)
        err = errf.read().decode()
        errf.close()
        assert p.returncode == 0, f"{line!r}: {p.args[0]} exited {p.returncode}: {err}"
        if so is not subprocess.PIPE:
            so.close()
    return cwd, (out or b"").decode()


def test_restore_page_followed_literally(cli: Any, pg: PostgresCluster, backup_config: Any, age_key: AgeKey,
                                         tmp_path: Path) -> None:
    with pg.connect() as conn:
        conn.execute('DROP DATABASE IF EXISTS "app" WITH (FORCE)')
        conn.execute('CREATE DATABASE "app"')
    try:
        with pg.connect("app") as conn:
            counts = seed(conn, SMALL)
        cfg = backup_config("app", options={"globals": True})
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0, r.output
        [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
        manifest = json.loads(mpath.read_text())
        # a copy of the set, as one would fetch it from S3/SFTP, in a plain working directory
        work = tmp_path / "restore-here"
        work.mkdir()
        for f in mpath.parent.iterdir():
            (work / f.name).write_bytes(f.read_bytes())
        # the database is gone (that is why we restore)
        with pg.connect() as conn:
            conn.execute('DROP DATABASE "app" WITH (FORCE)')
        env = {"BACKUP": str(work), "KEY": str(age_key.identity), "PGHOST": pg.host, "PGPORT": str(pg.port),
               "PGUSER": "postgres", "PATH": f"{pg.bin}:{os.environ['PATH']}"}
        cwd = tmp_path
        outputs = []
        commands = section_commands("2. Restore a PostgreSQL database")
        assert any(c.startswith("pg_restore --create") for c in commands)
        for line in commands:
            cwd, out = run_line(line, cwd, env)
            outputs.append((line, out))
        # the hash the page tells us to compare matches the manifest
        sha_out = next(o for ln, o in outputs if ln.startswith("sha256sum"))
        obj = next(o for o in manifest["objects"] if o["name"] == "app.dump.zst.age")
        assert sha_out.split()[0] == obj["sha256"]
        assert (work / "globals.sql").read_text().count("CREATE ROLE") >= 1
        for table, n in counts.items():
            assert pg.execute(f"SELECT count(*) FROM public.{table}", "app")[0][0] == n
            assert manifest["postgres"]["row_counts"][f"public.{table}"] == n
    finally:
        with pg.connect() as conn:
            conn.execute('DROP DATABASE IF EXISTS "app" WITH (FORCE)')
