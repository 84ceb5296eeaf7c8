"""docs/storage.md: every YAML example is a valid config, and the "try it" example runs as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from upkeeper.config.loader import load_text
from upkeeper.storage import open_storage

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(DOC.read_text()) if kind == lang]


def test_every_yaml_example_is_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ACCESS_KEY", "minio-access")
    monkeypatch.setenv("MINIO_SECRET_KEY", "minio-secret-value")
    etc = tmp_path / "etc"
    etc.mkdir()
    examples = blocks("yaml")
    assert len(examples) >= 5
    kinds = set()
    for text in examples:
        text = text.replace("/etc/upkeeper/", f"{etc}/")
        for ref in re.findall(r"_file: (\S+)", text):  # the secret files the example points to
            Path(ref).write_text("example-secret\n")
        config = load_text(text, file=str(DOC))
        assert config.storages, text
        for name, cfg in config.storages.items():
            kinds.add(cfg.kind)
            assert open_storage(name, cfg).describe()  # the backend accepts it too
    assert kinds == {"local", "s3", "sftp"}


def test_try_it_example_runs_as_written(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text()
    section = text.split("### Try it on this machine", 1)[1].split("\n## ", 1)[0]
    (yaml_block,) = [b for k, b in BLOCK.findall(section) if k == "yaml"]
    (console,) = [b for k, b in BLOCK.findall(section) if k == "console"]
    *setup, command, expected = console.strip().splitlines()
    assert command.startswith("$ upkeeper ")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "upkeeper.yaml").write_text(yaml_block)
    for line in setup:  # e.g. "$ mkdir -m 700 backups": upkeeper never creates the storage's directory
        assert line.startswith("$ mkdir "), line
        subprocess.run(shlex.split(line[2:]), check=True, cwd=tmp_path)
    res = cli(shlex.split(command[2:])[1:])
    assert res.code == 0, res.output
    assert res.out.split(" in ")[0] == expected.split(" in ")[0]  # all but the timing
    assert (tmp_path / "backups").is_dir()
