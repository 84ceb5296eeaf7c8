"""A throwaway OpenSSH server for SFTP storage tests and SSH audits.

Runs as an unprivileged user (no /run/sshd needed), key authentication only,
SFTP via internal-sftp.  ``authorized_keys`` gets a fresh client key.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from upkeeper.sandbox._util import chown_to, free_port, is_root, make_traversable, wait_for_port

SSHD = "/usr/sbin/sshd"
SANDBOX_USER = "upkeeper-sandbox"

CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_ed25519
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel VERBOSE
{extra}
"""


def ensure_user(name: str = SANDBOX_USER) -> str:
    """An unprivileged OS user to run sshd as (created when we are root and it is missing)."""
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    if not is_root():
        return pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    return name


class SshServer:
    def __init__(self, base_dir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.base = Path(base_dir)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.user = ensure_user()
        self.home = self.base / "home"
        self.client_key = self.base / "client_ed25519"
        self.known_hosts = self.base / "known_hosts"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.base / "sshd_config"

    def start(self) -> SshServer:
        self.base.mkdir(parents=True, exist_ok=True)
        make_traversable(self.base)
        self.home.mkdir(exist_ok=True)
        keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
        for key in (self.base / "host_ed25519", self.client_key):
            if not key.exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.base / "authorized_keys").write_text(Path(str(self.client_key) + ".pub").read_text())
        self.config_path.write_text(CONFIG.format(port=self.port, base=self.base, extra=self.extra_config))
        if is_root():
            chown_to(self.base, self.user)
            os.chown(self.client_key, 0, 0)  # the client (us) keeps its key
        os.chmod(self.base / "host_ed25519", 0o600)
        argv = [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.base / "sshd.log")]
        if is_root() and self.user != "root":
            argv = ["runuser", "-u", self.user, "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            err = self.proc.stderr.read().decode() if self.proc.stderr and self.proc.poll() is not None else ""
            raise RuntimeError(f"sshd did not start: {err or (self.base / 'sshd.log').read_text()}") from None
        host_pub = (self.base / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        time.sleep(0.05)

    @property
    def login(self) -> str:
        return self.user

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
