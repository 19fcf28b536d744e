"""A Debian 12 test VM under QEMU (software emulation: this machine has no usable KVM).

The image is built once per package list by build-image.sh and cached outside the repository; every run boots a
fresh copy-on-write overlay of it plus a blank data disk, with host ports forwarded on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUEST_PORTS = {"ssh": 22, "http": 80, "https": 443, "metrics": 9464, "node": 9100}


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    key = hashlib.sha256(
        (HERE / "build-image.sh").read_bytes() + (HERE / "image-packages.txt").read_bytes()
    ).hexdigest()[:16]
    return base / "ai-assistant" / "vm" / key


def missing_tools() -> list[str]:
    return [t for t in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "ssh", "mkfs.ext4") if not shutil.which(t)]


def build_image(log: Path) -> Path:
    out = cache_dir()
    with log.open("ab") as fh:
        subprocess.run([str(HERE / "build-image.sh"), str(out)], check=True, stdout=fh, stderr=subprocess.STDOUT)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VM:
    image_dir: Path
    workdir: Path
    memory_mb: int = 2048
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def key(self) -> Path:
        return self.workdir / "id_ed25519"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # ssh refuses a private key readable by others; the cached copy may have other permissions.
        shutil.copy(self.image_dir / "id_ed25519", self.key)
        self.key.chmod(0o600)
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(self.image_dir / "base.qcow2"),
                str(self.workdir / "root.qcow2"),
            ],
            check=True,
        )
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.workdir / "data.qcow2"), "2G"], check=True)
        self.ports = {name: free_port() for name in GUEST_PORTS}

    def start(self) -> None:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{self.ports[n]}-:{p}" for n, p in GUEST_PORTS.items())
        cmd = [
            "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", str(self.memory_mb),
            "-nographic", "-monitor", "none", "-serial", f"file:{self.console}",
            "-kernel", str(self.image_dir / "vmlinuz"), "-initrd", str(self.image_dir / "initrd.img"),
            "-append", "root=LABEL=root rw console=ttyS0 net.ifnames=0 quiet",
            "-drive", f"file={self.workdir / 'root.qcow2'},if=virtio,format=qcow2",
            "-drive", f"file={self.workdir / 'data.qcow2'},if=none,id=d1,format=qcow2",
            "-device", "virtio-blk-pci,drive=d1,serial=data01",
            "-netdev", f"user,id=n0,{fwd}", "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        # stderr to a file, not a pipe: a VM kept running (VM_KEEP) outlives the test process that would read it.
        with (self.workdir / "qemu.err").open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-p", str(self.ports["ssh"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3",
            "-o", "BatchMode=yes", "root@127.0.0.1",
        ]  # fmt: skip

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ssh_args(), command], capture_output=True, text=True, timeout=timeout)

    def wait_ssh(self, deadline_s: float = 300) -> float:
        """Seconds until ssh answers. A hung initramfs accepts TCP and then hangs, so every try is bounded."""
        start = time.monotonic()
        while time.monotonic() - start < deadline_s:
            if self.proc is not None and self.proc.poll() is not None:
                err = (self.workdir / "qemu.err").read_text(errors="replace")
                raise RuntimeError(f"qemu exited with {self.proc.returncode}: {err.strip()}")
            try:
                if self.ssh("true", timeout=15).returncode == 0:
                    return time.monotonic() - start
            except subprocess.TimeoutExpired:
                pass
            time.sleep(2)
        tail = self.console.read_text(errors="replace")[-2000:] if self.console.exists() else ""
        raise TimeoutError(f"no ssh after {deadline_s:.0f} s; console tail:\n{tail}")

    def reboot(self, deadline_s: float = 400) -> float:
        start = time.monotonic()
        self.ssh("systemctl reboot", timeout=30)
        # Wait for ssh to go away before waiting for it to come back.
        while time.monotonic() - start < 60:
            try:
                if self.ssh("true", timeout=5).returncode != 0:
                    break
            except subprocess.TimeoutExpired:
                break
            time.sleep(1)
        self.wait_ssh(deadline_s)
        return time.monotonic() - start

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
