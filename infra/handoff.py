"""Hand-off to Ansible: one `pulumi up` provisions and then configures (docs/adr/0033-ansible-handoff.md).

A pulumi-command ``local.Command`` runs infra/ansible_handoff.sh from the repository root. Secrets travel only in
the command's environment, which is a Pulumi secret (encrypted in state, masked in logs); the script writes them to
a 0600 vars file in a private temporary directory and gives Ansible the file's path, never the values, on argv.
The triggers are digests of roles/, playbooks/, ansible.cfg and the inventory, so a change to any of them
replaces the command, which runs the playbook again.

The script turns that environment into files with ``write_handoff_files`` (``python -m infra.handoff write DIR``):
the inventory with the wheel built from this checkout, known_hosts from the host keys Pulumi knows, the 0600 secret
vars file and the internal CA. The VM harness calls the same function on the environment of a mocked ``pulumi up``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi_command import local

from infra.inventory import KNOWN_HOSTS_VAR

SCRIPT = "infra/ansible_handoff.sh"
PLAYBOOK = "playbooks/site.yml"
CONFIG_PATHS = ("roles", "playbooks", "ansible.cfg")
SERVICE_PATHS = ("service", "pyproject.toml")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ansible", ".cache"}


def tree_digest(root: Path, paths: tuple[str, ...] = CONFIG_PATHS) -> str:
    """sha256 over the relative names and bytes of every file under the given paths (sorted, so stable)."""
    h = hashlib.sha256()
    for rel in paths:
        base = root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for f in files:
            if _SKIP_DIRS.intersection(f.relative_to(root).parts) or f.suffix == ".pyc":
                continue
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class AnsibleHandoff(pulumi.ComponentResource):
    """Runs playbooks/site.yml against the exported inventory once the hosts exist."""

    command: local.Command
    triggers: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        repo_root: Path,
        inventory: pulumi.Output[str],
        secret_vars: pulumi.Output[dict[str, Any]],
        dynamic_inventory: pulumi.Output[str] | None,
        dynamic_hosts: int,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
        known_hosts: pulumi.Output[str] | None = None,
        onboot: pulumi.Output[dict[str, str]] | None = None,
    ) -> None:
        super().__init__("ai-assistant:config:AnsibleHandoff", name, None, opts)
        roles = tree_digest(repo_root)
        dumped: pulumi.Output[str] = secret_vars.apply(lambda v: json.dumps(v, sort_keys=True))
        secrets_json: pulumi.Output[str] = pulumi.Output.secret(dumped)
        env: dict[str, pulumi.Input[str]] = {
            "AI_ASSISTANT_INVENTORY": inventory,
            "AI_ASSISTANT_SECRET_VARS": secrets_json,
            "AI_ASSISTANT_PLAYBOOK": PLAYBOOK,
            "ANSIBLE_CONFIG": str(repo_root / "ansible.cfg"),
            "AI_ASSISTANT_KNOWN_HOSTS": known_hosts if known_hosts is not None else "",
        }
        if onboot is not None:
            # Where the on-boot artifact goes (bucket, prefix, region; plain): `publish` runs after `write`.
            env["AI_ASSISTANT_ONBOOT"] = onboot.apply(lambda o: json.dumps(o, sort_keys=True))
        if dynamic_inventory is not None:
            env["AI_ASSISTANT_DYNAMIC_INVENTORY"] = dynamic_inventory
            env["AI_ASSISTANT_DYNAMIC_HOSTS"] = str(dynamic_hosts)
        # Plain digests for the inventory and roles; the secrets' digest stays secret so rotation re-runs the play.
        self.triggers = pulumi.Output.all(
            roles,
            inventory.apply(_sha256),
            (dynamic_inventory or pulumi.Output.from_input("")).apply(_sha256),
            # The service itself: a new wheel is a new version to install.
            tree_digest(repo_root, SERVICE_PATHS),
        )
        self.command = local.Command(
            name,
            create=f"bash {SCRIPT}",
            update=f"bash {SCRIPT}",
            dir=str(repo_root),
            environment=pulumi.Output.secret(env),
            triggers=self.triggers,
            logging=local.Logging.STDOUT_AND_STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                # Ansible's output is no_log-clean, but it is still kept encrypted in state, like the environment.
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )
        self.register_outputs({"triggers": self.triggers})


# --- what the hand-off script writes (also called by the VM harness on a mocked `pulumi up`) ---------------------

WHEEL_NAME = re.compile(r"^ai_assistant-[^-]+-.*\.whl$")
# The hosts' interpreter (Debian 12): dependency wheels are picked for it, not for the controller's Python.
HOST_PYTHON = "3.11"


class HandoffError(Exception):
    """Bad hand-off input; the message is one line naming the variable or file."""


@dataclass(frozen=True)
class HandoffFiles:
    """The files one hand-off run gives Ansible (all under one private directory)."""

    inventory: Path
    known_hosts: Path
    secret_vars: Path  # 0600, JSON, passed as -e @file
    ca_dir: Path

    def playbook_args(self, playbook: str = PLAYBOOK) -> list[str]:
        """ansible-playbook's arguments for these files (prefix with the ansible-playbook path)."""
        return ["-i", str(self.inventory), "-e", f"@{self.secret_vars}", playbook]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def build_wheel(repo_root: Path, dest: Path, python: str = sys.executable) -> Path:
    """The service wheel built from this checkout (pip wheel --no-deps): what the hosts will run."""
    cmd = [python, "-m", "pip", "-q", "--disable-pip-version-check", "wheel", "--no-deps", "-w", str(dest)]
    subprocess.run([*cmd, str(repo_root)], check=True)
    return next(dest.glob("ai_assistant-*.whl"))


def build_wheelhouse(wheel: Path, dest: Path, python: str = sys.executable) -> Path:
    """The wheel's dependencies as wheels for the hosts' Python (pip download from the package index)."""
    cmd = [python, "-m", "pip", "-q", "--disable-pip-version-check", "download", "--only-binary=:all:"]
    subprocess.run([*cmd, "--python-version", HOST_PYTHON, "-d", str(dest), str(wheel)], check=True)
    for w in dest.glob("ai_assistant-*.whl"):
        w.unlink()  # the service wheel travels on its own (roles/assistant)
    return dest


def write_handoff_files(
    env: Mapping[str, str],
    dest: Path,
    *,
    wheel: Path,
    wheelhouse: Path,
    hostvars: Mapping[str, Mapping[str, Any]] | None = None,
    known_hosts: str | None = None,
    single_host: str | None = None,
    ssh_common_args: str | None = None,
) -> HandoffFiles:
    """Write what Ansible needs for one hand-off into ``dest`` (an empty, private directory).

    ``env`` is the hand-off command's environment as the Pulumi program declares it (AI_ASSISTANT_INVENTORY,
    AI_ASSISTANT_SECRET_VARS, AI_ASSISTANT_KNOWN_HOSTS). ``wheel``/``wheelhouse`` become assistant_wheel and
    assistant_wheelhouse. ``hostvars`` (host name -> variables) and ``known_hosts`` replace what the program
    declared, for a harness whose hosts are not where the mocks put them (a VM behind a port forward).
    ``single_host`` folds every host into one of that name, member of every group that had a host, with the variables
    of the first assistant host (the single-host layout of the roles' VM); ``hostvars`` then names it.
    ``ssh_common_args`` replaces the SSH options (e.g. ``infra.inventory.ssh_args`` for another jump host).
    Raises HandoffError (one line) on bad input; writes nothing secret anywhere but ``secret_vars`` and ``ca_dir``.
    """
    if not WHEEL_NAME.match(wheel.name) or not wheel.is_file():
        raise HandoffError(f"assistant_wheel: {wheel} is not an ai_assistant wheel")
    if not wheelhouse.is_dir():
        raise HandoffError(f"assistant_wheelhouse: {wheelhouse} is not a directory")
    try:
        doc = yaml.safe_load(env["AI_ASSISTANT_INVENTORY"])
        secrets = json.loads(env["AI_ASSISTANT_SECRET_VARS"])
    except KeyError as e:
        raise HandoffError(f"{e.args[0]}: missing from the hand-off environment") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise HandoffError(f"hand-off environment: not valid YAML/JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("all"), dict):
        raise HandoffError("AI_ASSISTANT_INVENTORY: expected an inventory with an `all` group")
    for key in ("internal_ca_key_pem", "internal_ca_cert_pem"):
        if not isinstance(secrets.get(key), str):
            raise HandoffError(f"AI_ASSISTANT_SECRET_VARS: {key} is missing")

    # Everything that can be refused is checked before the first file is written: no half-written hand-off.
    children = doc["all"].get("children") or {}
    if single_host is not None:
        first = sorted((children.get("assistant") or {}).get("hosts") or {})
        if not first:
            raise HandoffError("single_host: the inventory has no assistant host to take the variables from")
        merged = dict(children["assistant"]["hosts"][first[0]] or {})
        for group in children.values():
            if isinstance(group, dict) and group.get("hosts"):
                group["hosts"] = {single_host: None}
        # Host variables sit once, in the role group (as infra.inventory.render writes them).
        children["assistant"]["hosts"] = {single_host: merged}
    for name, override in (hostvars or {}).items():
        found = False
        for group in children.values():
            entry = (group.get("hosts") or {}) if isinstance(group, dict) else {}
            if name in entry and entry[name] is not None:
                entry[name] = {**entry[name], **override}
                found = True
        if not found:
            raise HandoffError(f"hostvars: {name} is not a host of the inventory")

    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_dir = dest / "internal-ca"
    ca_dir.mkdir(mode=0o700)
    _write_private(ca_dir / "ca.key", secrets.pop("internal_ca_key_pem"))
    _write_private(ca_dir / "ca.crt", secrets.pop("internal_ca_cert_pem"))
    # The tls role's internal_ca mode signs the hosts' certificates with this CA, on the controller.
    secrets["tls_internal_ca_dir"] = str(ca_dir)
    _write_private(dest / "secrets.json", json.dumps(secrets))

    known = dest / "known_hosts"
    _write_private(known, known_hosts if known_hosts is not None else env.get("AI_ASSISTANT_KNOWN_HOSTS", ""))
    all_vars = doc["all"].setdefault("vars", {})
    all_vars.update(
        {KNOWN_HOSTS_VAR: str(known), "assistant_wheel": str(wheel), "assistant_wheelhouse": str(wheelhouse)}
    )
    if ssh_common_args is not None:
        all_vars["ansible_ssh_common_args"] = ssh_common_args
    inventory = dest / "inventory.yml"
    _write_private(inventory, yaml.safe_dump(doc, sort_keys=False, width=1000))
    return HandoffFiles(inventory, known, dest / "secrets.json", ca_dir)


# --- the on-boot artifact (docs/adr/0039-autoscaled-hosts-configure-themselves.md) ----------------------------------

# The collections the roles use, from the controller's `ansible` package (the pin of roles/requirements.txt).
ONBOOT_COLLECTIONS = ("ansible/posix", "community/crypto", "community/general")
# What the roles' controller-side tasks run from the repository besides roles/ (roles/base/tasks/bundle.yml runs
# `python -m airgap.verify`, which reads the release's version from pyproject.toml): a booting host is its own
# controller. The third on-boot VM run stopped there.
ONBOOT_CONTROLLER_FILES = ("airgap/__init__.py", "airgap/manifest.py", "airgap/verify.py", "pyproject.toml")


def ansible_core_wheels(dest: Path, python: str = sys.executable) -> Path:
    """ansible-core (the controller's version) and its dependencies as wheels for the hosts' Python."""
    from importlib.metadata import version

    cmd = [python, "-m", "pip", "-q", "--disable-pip-version-check", "download", "--only-binary=:all:"]
    subprocess.run([*cmd, "--python-version", HOST_PYTHON, "-d", str(dest), f"ansible-core=={version('ansible-core')}"])
    if not any(dest.glob("ansible_core-*.whl")):
        raise HandoffError(f"ansible-core wheels: pip download into {dest} found none")
    return dest


def _collections_root() -> Path:
    import ansible_collections  # type: ignore[import-untyped]

    return Path(next(iter(ansible_collections.__path__)))


def build_onboot_artifact(
    repo_root: Path,
    dest: Path,
    *,
    inventory: str,
    wheel: Path,
    wheelhouse: Path,
    ansible_wheels: Path,
    collections_root: Path | None = None,
) -> tuple[Path, str]:
    """One tar for infra/boot_configure.py: roles and playbooks, the static inventory (plain: no secret is in it),
    the service wheel and its wheelhouse, ansible-core's wheels and the roles' collections. Returns (path, sha256).

    Uncompressed: the wheels are compressed already and a host unpacks it faster."""
    from infra.boot_configure import artifact_name

    if not WHEEL_NAME.match(wheel.name) or not wheel.is_file():
        raise HandoffError(f"assistant_wheel: {wheel} is not an ai_assistant wheel")
    if not any(ansible_wheels.glob("ansible_core-*.whl")):
        raise HandoffError(f"ansible-core wheels: none in {ansible_wheels}")
    collections = collections_root or _collections_root()
    for c in ONBOOT_COLLECTIONS:
        if not (collections / c).is_dir():
            raise HandoffError(f"collections: {c} is not installed on the controller ({collections})")
    doc = yaml.safe_load(inventory)
    if not isinstance(doc, dict) or not isinstance(doc.get("all"), dict):
        raise HandoffError("AI_ASSISTANT_INVENTORY: expected an inventory with an `all` group")
    manifest = {"wheel": f"service/{wheel.name}", "wheelhouse": "wheelhouse"}
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "artifact.tar.partial"

    def skip(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if _SKIP_DIRS.intersection(parts) or info.name.endswith(".pyc") else info

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in (*CONFIG_PATHS, *ONBOOT_CONTROLLER_FILES):
            if (repo_root / rel).exists() or rel in CONFIG_PATHS:
                tar.add(repo_root / rel, f"repo/{rel}", filter=skip)
        add_bytes(tar, "inventory.yml", yaml.safe_dump(doc, sort_keys=False, width=1000).encode())
        add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        tar.add(wheel, manifest["wheel"])
        tar.add(wheelhouse, "wheelhouse", filter=lambda i: None if i.name.endswith(wheel.name) else i)
        # ansible-core only: the `ansible` package's 100 collections would be most of a host's unpacking time.
        for w in sorted(ansible_wheels.glob("*.whl")):
            if not re.match(r"^ansible-\d", w.name):
                tar.add(w, f"ansible/{w.name}")
        for c in ONBOOT_COLLECTIONS:
            tar.add(collections / c, f"collections/ansible_collections/{c}", filter=skip)
    h = hashlib.sha256()
    with part.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    final = dest / artifact_name(digest)
    part.rename(final)
    return final, digest


def publish_onboot(
    artifact: Path,
    digest: str,
    *,
    bucket: str,
    prefix: str,
    region: str,
    endpoint_url: str | None = None,
    cloud: str = "aws",
) -> str:
    """Upload the artifact, then switch the pointer the boot script reads to it: a host booting meanwhile sees the
    previous artifact whole or this one whole. Returns the pointer's key."""
    from infra.boot_configure import POINTER, artifact_name, object_key

    key = object_key(prefix, POINTER)
    pointer = f"{digest}  {artifact_name(digest)}\n".encode()
    if cloud == "alicloud":
        _publish_oss(artifact, object_key(prefix, artifact_name(digest)), key, pointer, bucket, region, endpoint_url)
        return key
    import boto3  # type: ignore[import-untyped]

    s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
    s3.upload_file(str(artifact), bucket, object_key(prefix, artifact_name(digest)))
    s3.put_object(Bucket=bucket, Key=key, Body=pointer)
    return key


# The Alibaba Cloud credentials `pulumi up` runs with (the alicloud provider reads the same variables).
ALICLOUD_KEYS = ("ALICLOUD_ACCESS_KEY", "ALICLOUD_SECRET_KEY")


def _alicloud_credentials() -> tuple[str, str, str | None]:
    missing = [k for k in ALICLOUD_KEYS if not os.environ.get(k)]
    if missing:
        raise HandoffError(f"{', '.join(missing)}: required to publish the on-boot artifact to OSS")
    return (
        os.environ["ALICLOUD_ACCESS_KEY"],
        os.environ["ALICLOUD_SECRET_KEY"],
        os.environ.get("ALICLOUD_SECURITY_TOKEN") or None,
    )


def _publish_oss(
    artifact: Path, artifact_key: str, pointer_key: str, pointer: bytes, bucket: str, region: str, endpoint: str | None
) -> None:
    """The same two writes into OSS with Alibaba Cloud's OSS SDK (V4 signatures), from the operator's credentials."""
    import alibabacloud_oss_v2 as oss  # type: ignore[import-untyped]

    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(*_alicloud_credentials())
    cfg.region = region
    if endpoint:
        # A stand-in for the account (tests): the bucket goes in the path.
        cfg.endpoint, cfg.use_path_style, cfg.disable_ssl = endpoint, True, endpoint.startswith("http://")
    client = oss.Client(cfg)
    key = artifact_key
    try:
        client.put_object_from_file(oss.PutObjectRequest(bucket=bucket, key=key), str(artifact))
        key = pointer_key
        client.put_object(oss.PutObjectRequest(bucket=bucket, key=key, body=pointer))
    except oss.exceptions.OperationError as e:
        cause = e.unwrap()
        code = getattr(cause, "code", None) or type(cause).__name__
        raise HandoffError(f"oss://{bucket}/{key}: {code}") from None


def main(argv: list[str]) -> int:
    """`python -m infra.handoff write DIR`: the hand-off script's file step, from its environment."""
    if len(argv) != 2 or argv[0] not in ("write", "publish"):
        print("usage: python -m infra.handoff write|publish DIR", file=sys.stderr)
        return 2
    dest = Path(argv[1])
    if argv[0] == "publish":
        return _publish_main(dest)
    try:
        if os.environ.get("AI_ASSISTANT_WHEEL"):
            wheel = Path(os.environ["AI_ASSISTANT_WHEEL"])
            if not os.environ.get("AI_ASSISTANT_WHEELHOUSE"):
                raise HandoffError("AI_ASSISTANT_WHEELHOUSE: required with AI_ASSISTANT_WHEEL")
            wheelhouse = Path(os.environ["AI_ASSISTANT_WHEELHOUSE"])
        else:
            wheel = build_wheel(Path.cwd(), dest / "build" / "dist")
            wheelhouse = build_wheelhouse(wheel, dest / "build" / "wheelhouse")
        write_handoff_files(os.environ, dest, wheel=wheel, wheelhouse=wheelhouse)
    except HandoffError as e:
        print(f"ansible hand-off: {e}", file=sys.stderr)
        return 2
    return 0


def _publish_main(dest: Path) -> int:
    """`python -m infra.handoff publish DIR` (after `write DIR`): the on-boot artifact into the bucket that
    AI_ASSISTANT_ONBOOT names ({"bucket", "prefix", "region"}), for the autoscaled hosts that boot from now on."""
    try:
        try:
            target = json.loads(os.environ["AI_ASSISTANT_ONBOOT"])
            bucket, prefix, region = (str(target[k]) for k in ("bucket", "prefix", "region"))
            # Absent: aws, as the program wrote it before Alibaba Cloud had an on-boot path.
            cloud = str(target.get("cloud", "aws"))
        except (KeyError, json.JSONDecodeError, TypeError, AttributeError):
            raise HandoffError("AI_ASSISTANT_ONBOOT: expected JSON with bucket, prefix and region") from None
        if cloud not in ("aws", "alicloud"):
            raise HandoffError(f"AI_ASSISTANT_ONBOOT: cloud {cloud!r} is not aws or alicloud")
        if cloud == "alicloud":
            _alicloud_credentials()  # before the artifact is built
        inventory = os.environ.get("AI_ASSISTANT_INVENTORY", "")
        doc = yaml.safe_load((dest / "inventory.yml").read_text())
        wheel, wheelhouse = (
            Path(doc["all"]["vars"]["assistant_wheel"]),
            Path(doc["all"]["vars"]["assistant_wheelhouse"]),
        )
        wheels = ansible_core_wheels(dest / "build" / "ansible")
        artifact, digest = build_onboot_artifact(
            Path.cwd(), dest / "build", inventory=inventory, wheel=wheel, wheelhouse=wheelhouse, ansible_wheels=wheels
        )
        key = publish_onboot(artifact, digest, bucket=bucket, prefix=prefix, region=region, cloud=cloud)
    except HandoffError as e:
        print(f"ansible hand-off: {e}", file=sys.stderr)
        return 2
    scheme = "oss" if cloud == "alicloud" else "s3"
    print(f"ansible hand-off: on-boot artifact {digest[:16]} published, {scheme}://{bucket}/{key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
