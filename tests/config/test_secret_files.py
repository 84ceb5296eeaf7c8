"""Secret files the config names (password_file, identity_file, key files) that other users can read: a note from
``config check`` and a security.permissions finding, like libpq's refusal of a group- or world-readable .pgpass."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from upkeeper.config.loader import load_text
from upkeeper.config.secret_files import secret_files


def _secret(path: Path, content: str, mode: int) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


def _config(tmp_path: Path, make_config: Any) -> tuple[Path, dict[str, Path]]:
    files = {
        "pg": _secret(tmp_path / "pg.pass", "hunter2-pg-xyz\n", 0o644),        # readable by every user
        "redis": _secret(tmp_path / "redis.pass", "hunter2-redis\n", 0o600),   # fine
        "tlskey": _secret(tmp_path / "client.key", "not really a key\n", 0o640),  # readable by its group
        "age": _secret(tmp_path / "age-identity.txt", "AGE-SECRET-KEY-1XYZ\n", 0o600),
    }
    # a Kubernetes-style secret mount: a link to a file 0644
    (tmp_path / "..data").mkdir()
    _secret(tmp_path / "..data" / "hook.url", "http://127.0.0.1:9/hook-xyz\n", 0o644)
    (tmp_path / "hook.url").symlink_to(tmp_path / "..data" / "hook.url")
    files["hook"] = tmp_path / "hook.url"
    cfg = make_config({
        "targets": {
            "db": {"kind": "postgres", "host": "127.0.0.1", "user": "app", "password_file": str(files["pg"])},
            "cache": {"kind": "redis", "password_file": str(files["redis"]), "tls": True,
                      "tls_cert_file": str(tmp_path / "client.crt"), "tls_key_file": str(files["tlskey"])},
            "host": {"kind": "host"},
        },
        "backup": {"encryption": {"recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
                                  "identity_file": str(files["age"])}},
        "notifications": {"channels": {"hook": {"kind": "webhook", "url_file": str(files["hook"])}}},
        "jobs": {"perms": {"task": "security.permissions", "target": "host", "options": {"paths": []}}},
    })
    return cfg, files


def test_secret_files_walks_every_kind_of_secret_file(tmp_path: Path, make_config: Any) -> None:
    cfg, files = _config(tmp_path, make_config)
    found = {sf.path: sf.where for sf in secret_files(load_text(cfg.read_text(), str(cfg)))}
    assert found == {
        str(files["pg"]): ("targets", "db", "password_file"),
        str(files["redis"]): ("targets", "cache", "password_file"),
        str(files["tlskey"]): ("targets", "cache", "tls_key_file"),
        str(files["age"]): ("backup", "encryption", "identity_file"),
        str(files["hook"]): ("notifications", "channels", "hook", "url_file"),
    }


def test_config_check_notes_secret_files_others_can_read(tmp_path: Path, make_config: Any, cli: Any) -> None:
    cfg, files = _config(tmp_path, make_config)
    res = cli(["--config", str(cfg), "config", "check"])
    assert res.code == 0, res.output
    assert f"targets -> db -> password_file: {files['pg']} holds a secret and is readable by every user " \
           "(mode 0644)" in res.out
    assert f"chmod 600 {files['pg']}" in res.out
    assert f"{files['tlskey']} holds a secret and is readable by its group (mode 0640)" in res.out
    assert f"{files['hook']} holds a secret and is readable by every user (mode 0644)" in res.out  # the link followed
    assert str(files["redis"]) not in res.out and str(files["age"]) not in res.out
    assert "hunter2" not in res.output
    notes = cli(["--config", str(cfg), "config", "check", "--json"]).json()["notes"]
    assert ["targets", "db", "password_file"] in [n["path"] for n in notes]


def test_security_permissions_reports_upkeepers_own_secret_files(tmp_path: Path, make_config: Any,
                                                                  cli: Any) -> None:
    """pg.pass holds neither a key marker nor a secret-like name: only the config says it is a secret."""
    cfg, files = _config(tmp_path, make_config)
    res = cli(["--config", str(cfg), "run", "perms", "--json"])
    [run] = res.json()
    readable = {f["subject"]: f for f in run["findings"] if f["check"] == "security.permissions.secret_readable"}
    assert set(readable) == {str(files["pg"]), str(files["hook"])}, run["findings"]  # group-readable: not by default
    assert readable[str(files["pg"])]["severity"] == "critical"
    assert "upkeeper secret (targets -> db -> password_file)" in readable[str(files["pg"])]["message"]
    assert run["status"] == "fail"
