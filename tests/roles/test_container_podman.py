"""Image archives and the container method with real podman (marker `images`; skipped where podman is missing).

- The image_archive role (the assistant's, weaviate's and TGI's loader) runs for real against localhost into a
  throw-away podman storage (CONTAINERS_STORAGE_CONF): an archive is loaded once and its image ID or registry digest
  checked; a wrong checksum, an archive of another image and a file that is no archive each stop with one line naming
  the variable, with nothing loaded and no copy left behind.
- The assistant's container unit and its colour's ai-assistant command are rendered from the role's templates with the
  role's own assistant.yaml, connectors.yaml and secrets.env, and run with rootful podman on this host (runc through
  CONTAINERS_CONF, as docs/images.md says these machines need): the unit's command line serves, a signed message is
  answered to a stand-in for the IM platform on loopback, and the command runs `check-config` and the deploy gate's
  `probe` against the running container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import SECRET, ReplyReceiver, free_port, message, signed_generic_request, wait_until
from tests.roles.test_container_static import exec_start, render_assistant
from tests.roles.test_model_server_gpu import _play, _role, _task_states

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]


@pytest.fixture(autouse=True)
def _podman() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/bootstrap installs it); these tests run it")


# --- the image_archive role ----------------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A podman storage of this test's own: nothing loaded here reaches the host's images, and the reverse."""
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path}/graph"\nrunroot = "{tmp_path}/run"\n', encoding="utf-8"
    )
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    # Ansible's tempfile module reads TMPDIR: the host's copy of the archive must be gone after every run.
    (tmp_path / "hosttmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "hosttmp"))
    return tmp_path


def podman(*args: str) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout.strip()


def tiny_image(work: Path, name: str, content: str) -> tuple[str, Path, Path, str]:
    """An image of one file, saved as an OCI and a docker archive and removed again: (image ID, OCI archive, docker
    archive, the OCI archive's manifest digest, which is what a registry digest is)."""
    root = work / f"{name.replace('/', '_').replace(':', '_')}-rootfs"
    root.mkdir(parents=True)
    (root / "content.txt").write_text(content)
    rootfs = work / f"{root.name}.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(root / "content.txt", arcname="content.txt")
    image_id = podman("import", "--quiet", str(rootfs), name).removeprefix("sha256:")
    oci, docker = work / f"{root.name}.oci.tar", work / f"{root.name}.docker.tar"
    podman("save", "--quiet", "--format", "oci-archive", "-o", str(oci), name)
    podman("save", "--quiet", "--format", "docker-archive", "-o", str(docker), name)
    podman("rmi", name)
    with tarfile.open(oci) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return image_id, oci, docker, index["manifests"][0]["digest"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_play(tmp_path: Path, archive: Path, ref: str, **overrides: Any) -> subprocess.CompletedProcess[str]:
    variables = {
        "image_archive_src": str(archive),
        "image_archive_sha256": sha256(archive),
        "image_archive_ref": ref,
        "image_archive_src_var": "weaviate_image_archive",
        "image_archive_pin_var": "weaviate_image_digest",
        **overrides,
    }
    return _play(tmp_path, [_role("image_archive", variables)], "-e", "ansible_become=false", check=False)


def images_in_storage() -> list[str]:
    return podman("images", "--quiet", "--no-trunc").split()


def test_an_archive_is_loaded_once_and_its_image_id_checked(storage: Path) -> None:
    image_id, _, docker, _ = tiny_image(storage / "a", "localhost/ai-assistant-tiny:1", "a")
    first = load_play(storage, docker, image_id, image_archive_src_var="assistant_image_archive")
    assert first.returncode == 0, first.stdout[-3000:]
    assert _task_states(first.stdout)["Load the archive into podman"] == "changed"
    assert images_in_storage() == [f"sha256:{image_id}"]
    assert not list((storage / "hosttmp").iterdir())  # the host's copy is gone
    again = load_play(storage, docker, image_id)
    assert again.returncode == 0, again.stdout[-3000:]
    states = _task_states(again.stdout)
    assert states["Load the archive into podman"] == "skipping"  # a host that holds the image copies nothing
    assert states["Copy the archive to the host"] == "skipping"


def test_check_mode_on_a_host_without_the_image_reports_the_load_and_changes_nothing(storage: Path) -> None:
    image_id, _, docker, _ = tiny_image(storage / "a", "localhost/ai-assistant-tiny:1", "a")
    variables = {
        "image_archive_src": str(docker),
        "image_archive_sha256": sha256(docker),
        "image_archive_ref": image_id,
        "image_archive_src_var": "assistant_image_archive",
        "image_archive_pin_var": "assistant_image_id",
    }
    proc = _play(storage, [_role("image_archive", variables)], "-e", "ansible_become=false")  # check mode
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _task_states(proc.stdout)["Refuse an archive whose SHA-256 is not the pinned one"] == "ok"
    assert images_in_storage() == [] and not list((storage / "hosttmp").iterdir())


def test_an_oci_archive_keeps_the_registry_digest_the_units_run(storage: Path) -> None:
    """weaviate and TGI run NAME@DIGEST with --pull=never: the loaded image must answer to that reference."""
    _, oci, _, digest = tiny_image(storage / "w", "registry.invalid/weaviate-tiny:1", "w")
    proc = load_play(storage, oci, f"registry.invalid/weaviate-tiny@{digest}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    podman("image", "exists", f"registry.invalid/weaviate-tiny@{digest}")


def test_an_archive_of_another_image_is_refused_after_the_load_naming_the_pin(storage: Path) -> None:
    _, _, _, digest = tiny_image(storage / "w", "registry.invalid/weaviate-tiny:1", "pinned")
    _, other, _, _ = tiny_image(storage / "o", "registry.invalid/weaviate-tiny:2", "another image")
    proc = load_play(storage, other, f"registry.invalid/weaviate-tiny@{digest}")
    assert proc.returncode != 0
    expected = (
        f"weaviate_image_digest: {other} does not hold registry.invalid/weaviate-tiny@{digest} "
        "(podman loaded registry.invalid/weaviate-tiny:2)"
    )
    assert expected in proc.stdout, proc.stdout[-3000:]
    assert not list((storage / "hosttmp").iterdir())


def test_a_docker_archive_does_not_keep_a_registry_digest_and_is_refused(storage: Path) -> None:
    """`podman save --format docker-archive` writes a manifest of its own: the pinned digest cannot be proven, so the
    role refuses rather than run something it cannot tie to the pin (the README says how to make an OCI archive)."""
    _, _, docker, digest = tiny_image(storage / "w", "registry.invalid/weaviate-tiny:1", "w")
    proc = load_play(storage, docker, f"registry.invalid/weaviate-tiny@{digest}")
    assert proc.returncode != 0
    assert f"weaviate_image_digest: {docker} does not hold registry.invalid/weaviate-tiny@{digest}" in proc.stdout


def test_an_archive_with_another_checksum_is_refused_before_anything_is_copied_or_loaded(storage: Path) -> None:
    image_id, _, docker, _ = tiny_image(storage / "a", "localhost/ai-assistant-tiny:1", "a")
    proc = load_play(
        storage, docker, image_id, image_archive_sha256="f" * 64, image_archive_src_var="assistant_image_archive"
    )
    assert proc.returncode != 0
    line = f"assistant_image_archive_sha256: {docker} has SHA-256 {sha256(docker)}, not {'f' * 64}; nothing was loaded"
    assert line in proc.stdout, proc.stdout[-3000:]
    assert _task_states(proc.stdout).get("Copy the archive to the host") is None
    assert images_in_storage() == []


def test_a_file_that_is_no_image_archive_is_refused_with_podmans_first_line(storage: Path) -> None:
    junk = storage / "junk.tar"
    junk.write_bytes(b"no image in here\n" * 100)
    proc = load_play(storage, junk, "0" * 64, image_archive_src_var="assistant_image_archive")
    assert proc.returncode != 0
    assert f"assistant_image_archive: podman load refused {junk}: Error: payload does not match" in proc.stdout, (
        proc.stdout[-3000:]
    )
    assert images_in_storage() == [] and not list((storage / "hosttmp").iterdir())


@pytest.mark.parametrize("role", ["weaviate", "model_server"])
def test_weaviate_and_tgi_check_their_archive_before_the_load(storage: Path, role: str) -> None:
    """Through the roles themselves (check mode, this host): with an archive set they load instead of pulling, and a
    checksum that is not the archive's stops them with one line naming their own variable."""
    _, oci, _, digest = tiny_image(storage / "w", "registry.invalid/tiny:1", "w")
    prefix = "weaviate" if role == "weaviate" else "model_server_tgi"
    variables: dict[str, Any] = {
        f"{prefix}_image_digest": digest,
        f"{prefix}_image_archive": str(oci),
        f"{prefix}_image_archive_sha256": "e" * 64,
    }
    if role == "model_server":
        model = storage / "model.tar"
        with tarfile.open(model, "w") as tar:
            info = tarfile.TarInfo("config.json")
            tar.addfile(info)
        variables |= {
            "model_server_backend": "tgi",
            "model_server_nvidia_install": False,
            "model_server_user": "daemon",
            "model_server_models_dir": str(storage / "models"),
            "model_server_tgi_model_src": str(model),
            "model_server_tgi_model_sha256": sha256(model),
        }
    proc = _play(storage, [_role(role, variables)], facts=role == "model_server")
    assert proc.returncode != 0
    assert f"{prefix}_image_archive_sha256: {oci} has SHA-256 {sha256(oci)}, not {'e' * 64}" in proc.stdout, (
        proc.stdout[-3000:]
    )
    states = _task_states(proc.stdout)
    assert states["Pull the Weaviate image by digest" if role == "weaviate" else "Pull the TGI image by digest"] == (
        "skipping"
    )


def test_the_bundles_image_vars_are_what_the_role_loads(storage: Path) -> None:
    """build-bundle --images writes assistant_image_archive, its SHA-256 and the image ID read from the archive into
    bundle-vars.yml: with them (and nothing from the build machine's podman) the role loads and pins the image."""
    from airgap.build import image_vars
    from airgap.manifest import BundleError

    bundle = storage / "bundle"
    (bundle / "images").mkdir(parents=True)
    image_id, oci, _, _ = tiny_image(storage / "a", "localhost/ai-assistant:9.9.9", "a")
    shutil.copy(oci, bundle / "images" / "ai-assistant-9.9.9.oci.tar")
    variables = yaml.safe_load(image_vars(bundle / "images", "9.9.9"))
    assert variables["assistant_image_id"] == image_id  # read from the archive, equal to what podman gave it
    archive = Path(variables["assistant_image_archive"].replace("{{ ai_assistant_bundle_dir }}", str(bundle)))
    assert variables["assistant_image_archive_sha256"] == sha256(archive)
    proc = load_play(storage, archive, variables["assistant_image_id"],
                     image_archive_sha256=variables["assistant_image_archive_sha256"])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert images_in_storage() == [f"sha256:{image_id}"]
    (bundle / "images" / "ai-assistant-9.9.9.oci.tar").write_bytes(b"not an archive")
    with pytest.raises(BundleError, match=r"ai-assistant-9.9.9.oci.tar: not an OCI archive of one image"):
        image_vars(bundle / "images", "9.9.9")


# --- the assistant's container unit and command, run for real -----------------------------------------------------


def assistant_image() -> str:
    """The image `make images` tags localhost/ai-assistant:<version>; built here only when missing (tests/images
    checks the image itself; these tests check the role's command line against it)."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = f"localhost/ai-assistant:{version}"
    if subprocess.run(["podman", "image", "exists", image]).returncode != 0:
        import sys

        env = {**os.environ, "PYTHON": sys.executable}
        built = subprocess.run([str(REPO / "scripts" / "build-images")], capture_output=True, text=True, timeout=3600,
                               env=env, cwd=REPO)  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return podman("image", "inspect", "--format", "{{.Id}}", image)


@pytest.fixture
def runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These machines need runc (crun refuses their hybrid cgroups): a containers.conf for this test only, so the
    rendered command lines run exactly as the role writes them."""
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n', encoding="utf-8")
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))


@pytest.fixture
def receiver() -> Iterator[ReplyReceiver]:
    server = ReplyReceiver()
    yield server
    server.close()


UID = 10001  # the service account's ids as getent would give them; owns the data directory, as on a host
PROBE_SECRET = "whsec_cHJvYmUtc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh"  # pragma: allowlist secret


def test_the_container_unit_serves_and_its_command_runs_the_gate(runc: None, receiver: ReplyReceiver) -> None:
    image_id = assistant_image()
    # Not under /tmp: the container has a tmpfs there, and the mounts keep their host paths.
    base = Path(tempfile.mkdtemp(prefix="ai-assistant-container-", dir="/var/tmp"))
    name = f"ai-assistant-test-{os.getpid()}"
    port, metrics_port = free_port(), free_port()
    config, data, install = base / "etc", base / "data", base / "opt"
    extra: dict[str, Any] = {
        "assistant_install_method": "container",
        "assistant_image_id": image_id,
        "assistant_config_dir": str(config),
        "assistant_data_dir": str(data),
        "assistant_install_dir": str(install),
        "assistant_listen_host": "127.0.0.1",
        "assistant_port": port,
        "assistant_metrics_port": metrics_port,
        "assistant_store_backend": "sqlite",
        "assistant_engine_base_url": "http://127.0.0.1:9/v1",  # /help is answered before the model
        "assistant_admin_token": "admin-token-for-this-test",
        "assistant_connectors": {
            "im-connector": {
                "platform": "generic_im",
                "app_id": "test",
                "webhook_url": "https://assistant.example/api/im/callback",
                "reply_url": receiver.url,
                "bot_name": "AI助理",
            }
        },
        "assistant_connector_secrets": {"im-connector": {"app_secret": SECRET}},
        "assistant_deploy_probe_secret": PROBE_SECRET,
        "assistant_extra_settings": {"knowledge": {"enabled": False}, "worker": {"poll_interval_seconds": 0.1}},
        # This host's hard limits (docs/images.md): a container may not raise them.
        "assistant_container_ulimits": ["nofile=1024:1024", "nproc=1000:1000"],
        "ansible_facts": {"getent_passwd": {"ai-assistant": ["x", str(UID), str(UID), "", str(data), "/bin/false"]}},
        "__assistant_slots": {"blue": {"unit": name, "venv": f"{install}/venv", "port": port,
                                       "metrics_port": metrics_port}},
    }  # fmt: skip
    try:
        # The role's files, with the role's owners and modes (configure.yml).
        config.mkdir(mode=0o750)
        data.mkdir(mode=0o750)
        for name_, template, owner, mode in [
            ("assistant.yaml", "assistant.yaml.j2", 0, 0o640),
            ("connectors.yaml", "connectors.yaml.j2", 0, 0o640),
            ("secrets.env", "secrets.env.j2", UID, 0o600),
        ]:
            path = config / name_
            path.write_text(render_assistant(template, extra), encoding="utf-8")
            os.chown(path, owner, UID)
            path.chmod(mode)
        (config / "sensitive_words.txt").write_text("")
        os.chown(config / "sensitive_words.txt", 0, UID)
        (config / "sensitive_words.txt").chmod(0o640)
        os.chown(config, 0, UID)
        os.chown(data, UID, UID)
        unit = render_assistant("ai-assistant-container.service.j2", extra)
        command = install / "venv" / "bin" / "ai-assistant"
        command.parent.mkdir(parents=True)
        command.write_text(render_assistant("ai-assistant-container.sh.j2", extra), encoding="utf-8")
        command.chmod(0o755)

        # assistant.yaml through the role's own validate command, with the image's settings model.
        validate = render_assistant_string("{{ __assistant_config_validate }}", extra)
        # Ansible splits a validate command like a shell would, and runs it without one.
        checked = subprocess.run(shlex.split(validate % (config / "assistant.yaml")), capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        assert checked.returncode == 0, checked.stderr[-2000:]
        bad = base / "bad.yaml"
        bad.write_text("server:\n  prot: 8080\n")
        refused = subprocess.run(shlex.split(validate % bad), capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and "prot" in refused.stderr

        service = subprocess.Popen(exec_start(unit), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            # /healthz, what the role's restart handler waits for. /readyz would also need the model server, which
            # this test leaves out: /help and the gate's probe are answered before the model.
            wait_until(lambda: _healthy(url, service), 300, "the container unit's /healthz")

            body, headers = signed_generic_request(message("evt-role-container", "/help"))
            resp = httpx.post(url + "/api/im/callback", content=body, headers=headers, timeout=30)
            assert resp.status_code == 200 and resp.json()["ok"] is True
            replies = wait_until(lambda: receiver.for_event("evt-role-container"), 300, "the answer to /help")
            assert replies[0]["text"].strip()

            # The gate's two commands, through the colour's ai-assistant command, as slot_check and slot_gate run them.
            check = subprocess.run(
                [str(command), "check-config", f"--config-dir={config}", f"--data-dir={data}"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
            probe = subprocess.run(
                [str(command), "probe", f"--config-dir={config}", f"--data-dir={data}", f"--url={url}",
                 f"--metrics-url=http://127.0.0.1:{metrics_port}/metrics", "--timeout=120"],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert probe.returncode == 0, probe.stdout[-2000:] + probe.stderr[-2000:]
            assert "probe OK" in probe.stdout
            # The state was written by the service account, not by root.
            owners = {p.stat().st_uid for p in data.rglob("*")}
            assert owners == {UID}, owners
        finally:
            stop = subprocess.run(["podman", "stop", "--ignore", "--time", "30", name], capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            output = service.communicate(timeout=120)[0]
            print(f"\n[the container unit's output]\n{output[-3000:]}")
            assert stop.returncode == 0
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", name], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _healthy(url: str, service: subprocess.Popen[str]) -> bool:
    if service.poll() is not None:
        raise AssertionError(f"the container unit's command exited with {service.returncode}")
    try:
        return httpx.get(url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def render_assistant_string(source: str, extra: dict[str, Any]) -> str:
    from tests.roles.test_container_static import _render_string

    return _render_string(source, extra)
