"""The assistant and model-server images, built by scripts/build-images and run as real containers: labels, user,
health check and SBOM as shipped, and a signed message answered by the model server container serving the assistant
container. The only stand-in is the IM platform's receiving side (ReplyReceiver, on loopback)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ReplyReceiver, free_port, message, signed_generic_request, wait_until, write_config
from tests.images.conftest import LIMITS, REPO, Images, podman

# A cold build (base image, wheels, both images) took 16 min on a loaded two-core machine; it lands in the first test.
pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# The goal was 300 MB; the image measures 635 MB, and docs/images.md shows where it goes (the Feishu SDK and
# the in-process embedding model alone are 350 MB). This budget catches growth until the image is split.
ASSISTANT_IMAGE_BUDGET_MB = 700


def image_info(image: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(podman("image", "inspect", image).stdout)[0]
    return info


def expected_source() -> str:
    """What scripts/build-images labels as the source: git's origin without credentials, else "unknown"."""
    url = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True, text=True)
    return re.sub(r"//[^@/]*@", "//", url.stdout.strip()) if url.returncode == 0 and url.stdout.strip() else "unknown"


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@contextmanager
def container(image: str, *args: str, env: dict[str, str]) -> Iterator[str]:
    name = f"ai-assistant-test-{free_port()}"
    env_args = [item for key, value in env.items() for item in ("--env", f"{key}={value}")]
    podman("run", "--detach", "--name", name, "--network=host", *LIMITS, *env_args, *args, image)
    try:
        yield name
    finally:
        print(f"--- logs of {image} ---\n" + podman("logs", name, check=False).stdout[-3000:])
        podman("rm", "--force", "--volumes", name, check=False)


def running(name: str) -> bool:
    state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
    if state != "running":
        raise AssertionError(f"container {name} is {state}:\n{podman('logs', name, check=False).stderr[-3000:]}")
    return True


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(("attr", "user", "title"), [
    ("assistant", "10001:10001", "ai-assistant"),
    ("model_server", "10002:10002", "ai-assistant-model-server"),
])  # fmt: skip
def test_image_is_labelled_unprivileged_and_health_checked(images: Images, attr: str, user: str, title: str) -> None:
    info = image_info(getattr(images, attr))
    config, labels = info["Config"], info["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == title
    assert labels["org.opencontainers.image.version"] == VERSION
    assert re.fullmatch(r"[0-9a-f]{12}", labels["org.opencontainers.image.revision"]), labels
    assert labels["org.opencontainers.image.source"] == expected_source()
    assert config["User"] == user
    assert info["Healthcheck"]["Test"][0] == "CMD"  # podman shows it beside Config, not in it


@pytest.mark.parametrize(("attr", "name", "must_list"), [
    ("assistant", "ai-assistant", {"ai-assistant", "fastapi", "redis", "cryptography"}),
    ("model_server", "ai-assistant-model-server", {"llama-cpp-python", "uvicorn"}),
])  # fmt: skip
def test_sbom_lists_exactly_what_the_image_holds(images: Images, attr: str, name: str, must_list: set[str]) -> None:
    sbom = json.loads((REPO / "build" / "images" / f"{name}-{VERSION}.sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {(normalised(c["name"]), c["version"]) for c in sbom["components"]}
    probe = "import importlib.metadata as m; print('\\n'.join(f'{d.name} {d.version}' for d in m.distributions()))"
    out = podman("run", "--rm", "--network=none", *LIMITS, "--entrypoint", "python", getattr(images, attr), "-c", probe)
    installed = {(normalised(n), v) for n, v in (line.split() for line in out.stdout.splitlines())}
    assert listed == installed
    assert must_list <= {n for n, _ in listed}


def test_assistant_image_size_is_within_its_budget(images: Images) -> None:
    size_mb = int(podman("image", "inspect", "--format", "{{.Size}}", images.assistant).stdout) / 1e6
    print(f"\n[{images.assistant}: {size_mb:.0f} MB]")
    assert size_mb < ASSISTANT_IMAGE_BUDGET_MB


def test_bad_config_stops_the_assistant_container_with_one_clear_line(images: Images, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config", reply_url="http://127.0.0.1:9/replies", engine_url="http://127.0.0.1:9/v1"
    )
    (config / "assistant.yaml").write_text("server:\n  prot: 8080\n")
    result = subprocess.run(
        ["podman", "--runtime", "runc", "run", "--rm", "--network=none", *LIMITS, "-v", f"{config}:/config:ro",
         images.assistant],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "assistant.yaml" in output and "server.prot" in output and "unknown key" in output, output
    assert "Traceback" not in output


def test_signed_message_is_answered_by_the_containers(
    images: Images, volume: str, tmp_path: Path, receiver: ReplyReceiver
) -> None:
    model_port, port = free_port(), free_port()
    model_env = {"HOST": "127.0.0.1", "PORT": str(model_port), "N_THREADS": "1"}
    with container(images.model_server, env=model_env) as model:
        config = write_config(
            tmp_path / "config", reply_url=receiver.url, engine_url=f"http://127.0.0.1:{model_port}/v1"
        )
        service_env = {"AI_ASSISTANT_SERVER__HOST": "127.0.0.1", "AI_ASSISTANT_SERVER__PORT": str(port)}
        with container(images.assistant, "-v", f"{config}:/config:ro", "-v", f"{volume}:/data", env=service_env) as svc:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: running(svc) and answers(base + "/healthz"), 180, "the assistant container")
            wait_until(
                lambda: running(model) and answers(f"http://127.0.0.1:{model_port}/v1/models"), 600, "the model server"
            )
            body, headers = signed_generic_request(message("evt-container", "Name three colours."))
            resp = httpx.post(base + "/api/im/callback", content=body, headers=headers, timeout=30)
            assert resp.status_code == 200 and resp.json()["ok"] is True
            replies = wait_until(lambda: receiver.for_event("evt-container"), 300, "the answer from the containers")
            assert replies[0]["text"].strip() and replies[0]["text"] != "Name three colours."
            # The images' own health checks pass against the running services.
            assert podman("healthcheck", "run", svc, check=False).returncode == 0
            assert podman("healthcheck", "run", model, check=False).returncode == 0
            # State went to the volume, as the non-root user owns it.
            assert podman("run", "--rm", "--network=none", *LIMITS, "-v", f"{volume}:/data", "--entrypoint", "ls",
                          images.assistant, "/data").stdout.strip()  # fmt: skip
