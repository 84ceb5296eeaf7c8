"""``upkeeper storages list|check`` against real storages (local, SeaweedFS S3, OpenSSH SFTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services import sftp_storage_config
from upkeeper.sandbox.s3 import SeaweedS3
from upkeeper.sandbox.sshd import SshServer


def _config(tmp_path: Path, s3: SeaweedS3, bucket: str, sshd: SshServer, **s3_extra: Any) -> dict[str, Any]:
    sftp = sftp_storage_config(sshd).model_dump(mode="json", exclude_none=True)
    return {"storages": {
        "disk": {"kind": "local", "path": str(tmp_path / "backups")},
        "offsite": s3.storage_config(bucket, **s3_extra),
        "nas": sftp,
    }}


def test_check_all_storages_ok(cli: Any, make_config: Any, tmp_path: Path, s3_server: SeaweedS3,
                               s3_bucket: str, sftp_server: SshServer) -> None:
    cfg = make_config(_config(tmp_path, s3_server, s3_bucket, sftp_server))
    res = cli(["--config", cfg, "storages", "check"])
    assert res.code == 0, res.output
    for name in ("disk", "offsite", "nas"):
        assert f"ok    {name}" in res.out
    res = cli(["--config", cfg, "storages", "check", "--json"])
    rows = {r["name"]: r for r in res.json()}
    assert all(r["ok"] for r in rows.values()) and rows["offsite"]["kind"] == "s3"
    assert list((tmp_path / "backups").rglob("*.*")) == []  # the probe was deleted
    listed = cli(["--config", cfg, "storages", "list", "--json"]).json()
    assert [r["name"] for r in listed] == ["disk", "offsite", "nas"]
    assert s3_bucket in listed[1]["where"]


def test_check_reports_a_broken_storage_without_leaking_the_secret(
        cli: Any, make_config: Any, tmp_path: Path, s3_server: SeaweedS3, s3_bucket: str,
        sftp_server: SshServer) -> None:
    wrong = "Definitely-Wrong-Secret-0123456789"
    cfg = make_config(_config(tmp_path, s3_server, s3_bucket, sftp_server, secret_access_key=wrong))
    res = cli(["--config", cfg, "storages", "check"])
    assert res.code == 1
    assert "ok    disk" in res.out and "ok    nas" in res.out
    assert "FAILED offsite at write" in res.out and "access denied" in res.out
    assert wrong not in res.output
    rows = {r["name"]: r for r in cli(["--config", cfg, "storages", "check", "offsite", "--json"]).json()}
    assert rows["offsite"]["ok"] is False and rows["offsite"]["permanent"] is True
    assert wrong not in str(rows)


def test_unknown_storage_name_is_a_usage_error(cli: Any, make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({"storages": {"disk": {"kind": "local", "path": str(tmp_path)}}})
    res = cli(["--config", cfg, "storages", "check", "nope"])
    assert res.code == 2 and "unknown storage 'nope'" in res.err and "disk" in res.err


def test_a_private_key_pasted_as_key_file_is_not_printed(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """key_file holds a path; a private key pasted there instead (YAML block scalar) is named in the error — its
    body masked, in the text and in --json."""
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    pem = (tmp_path / "k").read_text()
    body = pem.splitlines()[1]
    cfg = make_config({"storages": {"nas": {"kind": "sftp", "host": "127.0.0.1", "port": 1, "user": "u",
                                            "path": "/srv/backups", "key_file": pem}}})
    for extra in ([], ["--json"]):
        res = cli(["--config", cfg, "storages", "check", *extra])
        assert res.code == 1 and "key_file -----BEGIN OPENSSH PRIVATE KEY-----***" in res.output, res.output
        assert body[:16] not in res.output, res.output
