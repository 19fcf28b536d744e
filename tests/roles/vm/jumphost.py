"""A stand-in for the stack's bastion: OpenSSH's sshd on the runner's loopback, with its own config, host key and
authorized key, so that Ansible reaches the VM through a jump host exactly as the hand-off's inventory says
(infra.inventory.ssh_args: a ProxyCommand with `ssh -W %h:%p`, host keys checked on both hops).

A stand-in because the cloud's bastion cannot exist here. It never touches the machine's own sshd: it reads only the
config written here (`sshd -f`), listens on 127.0.0.1 only, and forwards only to the VM's port (PermitOpen).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def sshd_binary() -> str | None:
    # /usr/sbin is not on every user's PATH.
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)


@dataclass
class JumpHost:
    workdir: Path
    port: int
    # The one address:port it may open a tunnel to (the VM's forwarded SSH port).
    target: str
    user: str = ""
    pid: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key(self) -> str:
        """The public host key ("ssh-ed25519 AAAA..."), as Pulumi would know a bastion's generated key."""
        return " ".join((self.workdir / "host_ed25519.pub").read_text().split()[:2])

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    def start(self, authorized_key: str, deadline_s: float = 30) -> None:
        """Write the config, host key and authorized key (once), start sshd and wait for its banner."""
        sshd = sshd_binary()
        if sshd is None:
            raise RuntimeError("sshd not found: the jump host stand-in needs openssh-server (scripts/apt-packages.txt)")
        self.user = self.user or getpass.getuser()
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.workdir / "host_ed25519"
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jump-host-stand-in", "-f", str(key)], check=True
            )
        (self.workdir / "authorized_keys").write_text(authorized_key.strip() + "\n")
        (self.workdir / "authorized_keys").chmod(0o600)
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\nAllowUsers {self.user}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            # A jump host only: tunnels to the VM and nothing else, no shell, no terminal.
            f"AllowTcpForwarding local\nPermitOpen {self.target}\nForceCommand /bin/false\nPermitTTY no\n"
            "X11Forwarding no\nAllowAgentForwarding no\nUsePAM no\n"
            # The key files live in the test's temporary directory, whose parents sshd's strict modes would judge.
            "StrictModes no\nLogLevel VERBOSE\n"
        )
        if os.geteuid() == 0:
            # sshd running as root insists on its privilege separation directory (made by systemd's tmpfiles on a
            # host that runs the package's service; this one need not).
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.pid, self._proc = proc.pid, proc
        start = time.monotonic()
        while time.monotonic() - start < deadline_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the jump host's sshd exited with {proc.returncode}: {self.log.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as s:
                    s.settimeout(3)
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the jump host's sshd gave no banner on 127.0.0.1:{self.port} in {deadline_s:.0f} s")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.pid and self.alive():
            os.kill(self.pid, 15)
            if self._proc is not None:
                self._proc.wait(timeout=20)

    def accepted_logins(self) -> int:
        """How many logins the stand-in accepted (sshd's VERBOSE log): proof that Ansible really hopped through it."""
        return self.log.read_text(errors="replace").count("Accepted publickey for ") if self.log.exists() else 0
