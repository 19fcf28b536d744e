"""The GPU path of roles/model_server (driver, container toolkit, CDI, TGI by digest, the staged model) and the
Weaviate image by digest, without a GPU: the roles run for real against localhost in check mode (what the test VM's
containers-check.yml also does on Debian 12), bad input stops at the roles' asserts before anything changes, and the
units render from the roles' own templates.

No GPU, NVIDIA repository or container registry can be reached here, so the driver is never installed and TGI never
started: check mode is as far as these tasks go (roles/model_server/README.md, "What was exercised here")."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.roles.test_static import render

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DIGEST = "sha256:" + "1" * 64
# An account every Debian host has: the play reads its uid/gid like the role does for model-server on a real host.
ACCOUNT = "daemon"


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }


def _archive(tmp_path: Path) -> tuple[Path, str]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}\n')
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(model / "config.json", arcname="config.json")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _play(
    tmp_path: Path, tasks: list[dict[str, Any]], *args: str, check: bool = True, facts: bool = False
) -> subprocess.CompletedProcess[str]:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": facts, "tasks": tasks}]))
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), *(["--check"] * check), str(playbook), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=600,
    )


def _tgi_vars(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    archive, sha = _archive(tmp_path)
    return {
        "model_server_backend": "tgi",
        "model_server_user": ACCOUNT,
        "model_server_models_dir": str(tmp_path / "models"),
        "model_server_tgi_image_digest": DIGEST,
        "model_server_tgi_model_src": str(archive),
        "model_server_tgi_model_sha256": sha,
        **overrides,
    }


def _role(name: str, variables: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"ansible.builtin.include_role": {"name": name, **extra}, "vars": variables}


def _recap(out: str) -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith("localhost "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _task_states(out: str) -> dict[str, str]:
    """Task name -> the first state Ansible printed for it (ok, changed, skipping, failed, ...)."""
    states: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        task = re.match(r"^TASK \[(?:\w+ : )?(.*)\] \**$", line)
        if task:
            current = task.group(1)
            continue
        state = re.match(r"^(ok|changed|skipping|failed|fatal|included)[:\s]", line)
        if current and current not in states and state:
            states[current] = state.group(1)
    return states


def test_gpu_path_passes_check_mode_without_a_gpu_or_nvidias_repositories(tmp_path: Path) -> None:
    """What the VM's containers-check.yml does, on this host: the repositories and keys are what would change; the
    packages, the CDI spec and the pull are reported as skipped rather than failing where nothing can be resolved."""
    proc = _play(tmp_path, [_role("model_server", _tgi_vars(tmp_path))], facts=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    recap = _recap(proc.stdout)
    assert recap["failed"] == 0 and recap["changed"] > 0
    states = _task_states(proc.stdout)
    assert states["Add NVIDIA's APT repositories (each signed-by its own key only)"] in {"changed", "ok"}
    # Skipped while their repository is only planned (check mode on a host without it), instead of failing.
    assert states["Install the driver (DKMS builds it for the running kernel, hence its headers)"] == "skipping"
    assert states["Install the container toolkit"] == "skipping"
    assert states["Write the CDI spec (nvidia-ctk cdi generate)"] == "skipping"
    assert states["Refuse an archive whose SHA-256 is not the pinned one"] == "ok"
    assert states["Write the systemd unit that runs the TGI container"] == "changed"
    assert not (tmp_path / "models").exists()  # check mode wrote nothing


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_server_tgi_image_digest": ""}, "model_server_tgi_image_digest: sha256:<64 hex digits> of ghcr.io/"),
        (
            {"model_server_tgi_image": "ghcr.io/huggingface/text-generation-inference@sha256:" + "2" * 64},
            "model_server_tgi_image: repository and tag only; the digest goes in model_server_tgi_image_digest",
        ),
        (
            {"model_server_tgi_model_src": "", "model_server_tgi_model_url": ""},
            "model_server_tgi_model_url or model_server_tgi_model_src: one is required",
        ),
        ({"model_server_tgi_model_sha256": "abc"}, "model_server_tgi_model_sha256: the 64-hex-digit SHA-256"),
        ({"model_server_tgi_model_dir": "../etc"}, "model_server_tgi_model_dir: one directory name"),
    ],
    ids=["no-digest", "digest-in-image", "no-model", "bad-sha256", "dir-is-a-path"],
)
def test_bad_tgi_input_stops_with_one_line_naming_the_variable(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    proc = _play(tmp_path, [_role("model_server", _tgi_vars(tmp_path, **overrides))])
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert "Install gpg" not in proc.stdout  # stopped before the first task that touches the host


def test_a_model_archive_with_another_checksum_is_refused_before_it_is_copied(tmp_path: Path) -> None:
    proc = _play(tmp_path, [_role("model_server", _tgi_vars(tmp_path, model_server_tgi_model_sha256="f" * 64))])
    assert proc.returncode != 0
    archive, sha = tmp_path / "model.tar", hashlib.sha256((tmp_path / "model.tar").read_bytes()).hexdigest()
    assert f"model_server_tgi_model_sha256: {archive} has SHA-256 {sha}, not {'f' * 64}" in proc.stdout, proc.stdout[
        -3000:
    ]
    assert "Copy the model archive from the controller" not in proc.stdout


@pytest.fixture
def key_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real OpenPGP public key served over loopback HTTP, and its fingerprint."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", "test-key@example.invalid", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    served = tmp_path / "served"
    served.mkdir()
    exported = subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True, timeout=60).stdout
    (served / "key.asc").write_bytes(exported)
    listing = subprocess.run(
        [*gpg, "--with-colons", "--show-keys", str(served / "key.asc")], check=True, capture_output=True, text=True
    ).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/key.asc", fingerprint
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_a_signing_key_without_the_pinned_fingerprint_is_refused(tmp_path: Path, key_server: tuple[str, str]) -> None:
    """Not check mode: the key is really downloaded (into a temporary keyring directory) and read, and the refusal
    stops the run before any repository is written."""
    url, fingerprint = key_server
    pinned = "0" * 40
    repos = [{"name": "test-repo", "uri": "http://127.0.0.1:9/", "suite": "/", "key_url": url}]
    repos[0]["key_fingerprint"] = pinned
    keyrings = tmp_path / "keyrings"
    keyrings.mkdir()
    proc = _play(
        tmp_path,
        [_role("model_server", {**_tgi_vars(tmp_path), "model_server_nvidia_repos": repos}, tasks_from="nvidia.yml")],
        "-e",
        f"__model_server_keyrings={keyrings}",
        check=False,
    )
    assert proc.returncode != 0
    assert (
        f"model_server_nvidia_repos[test-repo].key_fingerprint: {url} holds {fingerprint}, not {pinned}" in proc.stdout
    ), proc.stdout[-3000:]
    assert (keyrings / "test-repo.asc.download").exists() and not (keyrings / "test-repo.asc").exists()
    assert not Path("/etc/apt/sources.list.d/test-repo.sources").exists()


def test_weaviate_without_a_digest_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    proc = _play(tmp_path, [_role("weaviate", {"weaviate_tier": "basic"})])
    assert proc.returncode != 0
    assert "weaviate_image_digest: sha256:<64 hex digits> of cr.weaviate.io/" in proc.stdout, proc.stdout[-3000:]
    assert "Install podman" not in proc.stdout


def test_tgi_unit_runs_the_digest_as_the_account_with_the_staged_model() -> None:
    facts = {"getent_passwd": {"model-server": ["x", "998", "997", "", "/var/lib/model-server", "/usr/sbin/nologin"]}}
    unit = render(
        "model_server",
        "model-server-tgi.service.j2",
        {"model_server_backend": "tgi", "model_server_tgi_image_digest": DIGEST, "ansible_facts": facts},
    )
    assert f"ghcr.io/huggingface/text-generation-inference:3.3.4@{DIGEST} \\" in unit
    assert "--pull=never" in unit and "--pull=missing" not in unit
    assert "--user 998:997" in unit and "--cap-drop all" in unit and "--read-only" in unit
    assert "--volume /data/models:/data:ro" in unit and "--model-id /data/qwen2.5-7b-instruct" in unit
    assert "--device nvidia.com/gpu=all" in unit and "--privileged" not in unit
    # Without the account's ids the container runs as nobody, never as root.
    bare = render("model_server", "model-server-tgi.service.j2", {"model_server_tgi_image_digest": DIGEST})
    assert "--user 65534:65534" in bare


def test_weaviate_unit_runs_the_digest_and_never_pulls() -> None:
    unit = render("weaviate", "weaviate.service.j2", {"weaviate_image_digest": "sha256:" + "3" * 64})
    assert f"cr.weaviate.io/semitechnologies/weaviate:1.28.4@sha256:{'3' * 64} \\" in unit
    assert "--pull=never" in unit
