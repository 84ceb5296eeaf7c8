"""Storage throughput, side by side with the tools an operator would use instead.

One run, same data (128 MiB of random bytes, incompressible like an encrypted backup), same servers:

- local: upkeeper's LocalStorage (streamed in 1 MiB writes, fsync + rename) vs ``dd conv=fsync``;
- s3 (SeaweedFS on loopback): S3Storage (sequential multipart, 16 MiB parts) vs boto3's
  ``upload_file``/``download_file`` (s3transfer: 8 MiB parts, 10 threads — the AWS CLI's engine);
- sftp (OpenSSH on loopback): SftpStorage (paramiko) vs the OpenSSH ``sftp`` client.

Writes JSON to bench/results/storage.json and prints the ratios (ours / anchor; < 1 is faster).
Run: ``.venv/bin/python bench/storage.py [--mib N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upkeeper.config.storage import LocalStorageConfig, S3StorageConfig, SftpStorageConfig  # noqa: E402
from upkeeper.sandbox.s3 import SeaweedS3  # noqa: E402
from upkeeper.sandbox.sshd import SshServer  # noqa: E402
from upkeeper.storage import open_storage  # noqa: E402
from upkeeper.storage.base import Storage  # noqa: E402

CHUNK = 1024 * 1024


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def upload(storage: Storage, key: str, src: Path) -> None:
    w = storage.open_write(key)
    try:
        with src.open("rb") as fh:
            while data := fh.read(CHUNK):
                w.write(data)
        w.commit()
    except BaseException:
        w.abort()
        raise


def download(storage: Storage, key: str) -> str:
    h = hashlib.sha256()
    with storage.open_read(key) as fh:
        while data := fh.read(CHUNK):
            h.update(data)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while data := fh.read(CHUNK):
            h.update(data)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=128)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="upk-bench-storage-", dir="/tmp"))
    base.chmod(0o755)
    src = base / "payload.bin"
    with src.open("wb") as fh:
        for _ in range(args.mib):
            fh.write(os.urandom(CHUNK))
    digest = sha256_file(src)
    results: dict[str, Any] = {"mib": args.mib, "machine": platform.platform(), "cpus": os.cpu_count()}
    s3 = SeaweedS3(base / "s3")
    sshd = SshServer(base / "sshd")
    try:
        # --- local
        (base / "local").mkdir()  # upkeeper never creates a storage's directory
        local = open_storage("local", LocalStorageConfig(path=str(base / "local")))
        (base / "dd").mkdir()
        results["local"] = {
            "anchor": "dd bs=1M conv=fsync",
            "anchor_write_s": timed(lambda: subprocess.run(
                ["dd", f"if={src}", f"of={base / 'dd' / 'x'}", "bs=1M", "conv=fsync", "status=none"],
                check=True)),
            "ours_write_s": timed(lambda: upload(local, "x", src)),
        }
        assert download(local, "x") == digest

        # --- s3
        s3.start()
        s3.create_bucket("bench")
        s3_storage = open_storage("s3", S3StorageConfig.model_validate(s3.storage_config("bench")))
        client = s3.client()
        client.upload_file(str(src), "bench", "warm-up")  # both sides start warm
        s3_storage.stat("warm-up")
        s3r: dict[str, Any] = {"anchor": "boto3 upload_file/download_file (s3transfer, 10 threads)"}
        s3r["anchor_write_s"] = timed(lambda: client.upload_file(str(src), "bench", "anchor"))
        s3r["ours_write_s"] = timed(lambda: upload(s3_storage, "ours", src))
        s3r["anchor_read_s"] = timed(lambda: client.download_file("bench", "anchor", str(base / "s3-dl")))
        s3r["ours_read_s"] = timed(lambda: download(s3_storage, "ours"))
        assert download(s3_storage, "ours") == digest
        results["s3"] = s3r

        # --- sftp
        sshd.start()
        remote = sshd.home / "bench"
        remote.mkdir()
        if os.geteuid() == 0:
            shutil.chown(remote, sshd.user)
        cfg = SftpStorageConfig(host="127.0.0.1", port=sshd.port, user=sshd.user, key_file=str(sshd.client_key),
                                known_hosts=str(sshd.known_hosts), path=str(remote))
        sftp_storage = open_storage("sftp", cfg)
        sftp_storage.stat("warm-up")
        ssh_opts = ["-q", "-i", str(sshd.client_key), "-P", str(sshd.port), "-o",
                    f"UserKnownHostsFile={sshd.known_hosts}", "-o", "BatchMode=yes"]

        def sftp_batch(cmd: str) -> None:
            subprocess.run(["sftp", *ssh_opts, "-b", "-", f"{sshd.user}@127.0.0.1"], input=cmd.encode(),
                           check=True, capture_output=True)

        sr: dict[str, Any] = {"anchor": "OpenSSH sftp put/get"}
        sr["anchor_write_s"] = timed(lambda: sftp_batch(f"put {src} {remote}/anchor\n"))
        sr["ours_write_s"] = timed(lambda: upload(sftp_storage, "ours", src))
        sr["anchor_read_s"] = timed(lambda: sftp_batch(f"get {remote}/anchor {base / 'sftp-dl'}\n"))
        sr["ours_read_s"] = timed(lambda: download(sftp_storage, "ours"))
        assert download(sftp_storage, "ours") == digest
        results["sftp"] = sr
        sftp_storage.close()
    finally:
        s3.stop()
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)

    for name in ("local", "s3", "sftp"):
        r = results[name]
        for op in ("write", "read"):
            if f"ours_{op}_s" in r:
                r[f"{op}_ratio"] = round(r[f"ours_{op}_s"] / r[f"anchor_{op}_s"], 2)
                r[f"ours_{op}_mib_s"] = round(args.mib / r[f"ours_{op}_s"], 1)
                r[f"anchor_{op}_mib_s"] = round(args.mib / r[f"anchor_{op}_s"], 1)
                print(f"{name:5} {op:5}: ours {r[f'ours_{op}_s']:.2f}s ({r[f'ours_{op}_mib_s']} MiB/s)  "
                      f"{r['anchor']} {r[f'anchor_{op}_s']:.2f}s  ratio {r[f'{op}_ratio']}")
    out = ROOT / "bench" / "results" / "storage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
