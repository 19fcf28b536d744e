"""On-boot configuration in the VM (issue 19 item 5, docs/adr/0039): the converged VM plays a host the scaling group
just started, configuring itself with infra/boot_configure.py, with no controller.

Stand-ins, because the real thing cannot exist here: moto's server on the test runner for the AWS account (S3 for the
backup bucket, Secrets Manager for the secret; the guest reaches the runner's loopback as 10.0.2.2 through QEMU's
slirp, the one destination the air-gapped proof's egress block allows), static test credentials for the instance
role, and the runner's own Debian packages of python3-boto3 for cloud-init's `packages:`. Everything else is real:
the user data the stack declares (its boot script and config file are written from the declared document), the
artifact built by the hand-off's builder and uploaded by its uploader, the secret holding the hand-off's variables,
and the boot script running `ansible-playbook -c local` over the real roles in the guest.

The guest is air-gapped, so the boot script gets the bundle's arguments after `--` (as an air-gapped site's user data
would) and the bundle is copied into the guest first. Mitogen's strategy runs the local play, as the harness's later
plays do (tests/roles/conftest.py TestVM.play): under TCG a plain `-c local` run takes seconds per task.
Not in CI (opt-in: VM_ONBOOT=1; docs/roles.md says why and what it costs).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import message, moto_server, signed_generic_request, wait_until
from tests.roles.conftest import REPO, TIMINGS, TestVM
from tests.roles.test_vm import https

pytestmark = [
    pytest.mark.vm,
    pytest.mark.timeout(3600, func_only=True),
    pytest.mark.skipif(os.environ.get("VM_ONBOOT") != "1", reason="opt-in (VM_ONBOOT=1): see docs/roles.md"),
]

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET, SECRET_ID, REGION = "vm-onboot", "ai-assistant-vm-onboot", "us-east-1"
GUEST_BUNDLE = "/srv/ai-assistant-bundle"
GUEST_MITOGEN = "/opt/onboot-mitogen"
# cloud-init's `packages:` in the user data: the guest's missing ones, from the runner's Debian mirror (same release).
DEBS = ("python3-boto3", "python3-venv", "gpg")
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _timed(phase: str, started: float) -> None:
    TIMINGS[phase] = time.monotonic() - started


@pytest.fixture(scope="module")
def moto(test_vm: TestVM) -> Iterator[str]:
    with moto_server(test_vm.workdir / "onboot-moto.log") as endpoint:
        yield endpoint


def _bundle(test_vm: TestVM) -> Path:
    args = test_vm.play_args
    return Path(next(a for a in args if a.startswith("ai_assistant_bundle_dir=")).split("=", 1)[1])


def _as_root(test_vm: TestVM, command: str, stdin: bytes | None = None, timeout: float = 1200) -> None:
    done = subprocess.run(
        ["ssh", "-F", str(test_vm.ssh_config), "testvm", command], input=stdin, capture_output=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command[:80]}: {done.stderr.decode(errors='replace')[-2000:]}"


def _push(test_vm: TestVM, src: Path, dest: str, *names: str) -> None:
    """src's entries (or the named ones) into dest in the guest, as one tar stream over the shared SSH connection."""
    pack = subprocess.Popen(
        ["tar", "-C", str(src), "--exclude=__pycache__", "-cf", "-", *(names or ["."])], stdout=subprocess.PIPE
    )
    unpack = subprocess.run(
        ["ssh", "-F", str(test_vm.ssh_config), "testvm", f"rm -rf {dest} && mkdir -p {dest} && tar -C {dest} -xf -"],
        stdin=pack.stdout,
        capture_output=True,
        timeout=1800,
    )
    assert pack.stdout is not None
    pack.stdout.close()
    assert pack.wait(60) == 0 and unpack.returncode == 0, f"copy to {dest}: {unpack.stderr.decode()[-1000:]}"


def _artifact_inventory(test_vm: TestVM, address: str) -> tuple[str, dict[str, str]]:
    """The hand-off's inventory as the artifact carries it for a host the group adds: the VM's harness overrides
    (what a cloud cannot give a VM) move from the folded host to the assistant group, which the new host joins; the
    connection variables stay with the folded host, whose address becomes its private one, as a cloud's inventory
    has it (the harness reaches the VM on a port forwarded to the runner's loopback, which inside the guest is the
    guest's own: the data host's Redis link and the log host's link listen on the private address). Returns
    (inventory YAML, the host's colour and zone)."""
    doc = yaml.safe_load(test_vm.inventory.read_text())
    assistant = doc["all"]["children"]["assistant"]
    own = dict(assistant["hosts"]["testvm"])
    connection = {k: own.pop(k) for k in list(own) if k.startswith("ansible_")}
    where = {"color": own.pop("ai_assistant_color"), "zone": own.pop("ai_assistant_zone")}
    assistant["hosts"]["testvm"] = {
        **connection,
        "ansible_host": address,
        "ai_assistant_color": where["color"],
        "ai_assistant_zone": where["zone"],
    }
    assistant["vars"] = {**(assistant.get("vars") or {}), **own}
    return yaml.safe_dump(doc, sort_keys=False, width=1000), where


@pytest.fixture(scope="module")
def onboot(test_vm: TestVM, moto: str) -> dict[str, Any]:
    """Publish, store the secret, prepare the guest as cloud-init would, run the boot script; returns its result."""
    from airgap.build import controller_wheels
    from infra import cloudinit
    from infra.handoff import build_onboot_artifact, publish_onboot
    from infra.secrets import issuing_ca_cert, onboot_secret

    os.environ.update(KEYS)
    bundle = _bundle(test_vm)
    work = test_vm.workdir / "onboot"
    work.mkdir(exist_ok=True)

    started = time.monotonic()
    address = test_vm.private_address()
    inventory, where = _artifact_inventory(test_vm, address)
    artifact, digest = build_onboot_artifact(
        REPO,
        work / "artifact",
        inventory=inventory,
        wheel=next((bundle / "wheels").glob("ai_assistant-*.whl")),
        wheelhouse=bundle / "wheels",
        ansible_wheels=controller_wheels(Path(sys.executable)),
    )
    boto3.client("s3", endpoint_url=moto).create_bucket(Bucket=BUCKET)
    publish_onboot(artifact, digest, bucket=BUCKET, prefix=cloudinit.ONBOOT_PREFIX, region=REGION, endpoint_url=moto)
    given = json.loads(Path(test_vm.play_args[test_vm.play_args.index("-e") + 1].removeprefix("@")).read_text())
    # What the stack's on-boot secret holds (infra.secrets.onboot_secret): the hand-off's secret variables with the
    # internal CA's certificate, and an issuing CA the root signed for the service's name (InternalSecrets.issuing_ca).
    ca_dir = Path(given["tls_internal_ca_dir"])
    root_key, root_cert = (ca_dir / "ca.key").read_text(), (ca_dir / "ca.crt").read_text()
    issuing_key = (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    domain = yaml.safe_load(inventory)["all"]["vars"]["tls_domains"][0]
    secret = onboot_secret(
        {**{k: v for k, v in given.items() if k != "tls_internal_ca_dir"}, "internal_ca_cert_pem": root_cert},
        issuing_key,
        issuing_ca_cert(root_key, root_cert, issuing_key, domain),
    )
    boto3.client("secretsmanager", endpoint_url=moto).create_secret(Name=SECRET_ID, SecretString=json.dumps(secret))
    _timed("on-boot: publish (runner)", started)

    # What cloud-init would do: its packages, then the boot script and its config from the declared user data.
    started = time.monotonic()
    debs = work / "debs"
    debs.mkdir(exist_ok=True)
    closure = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances", *DEBS], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    wanted = sorted({line for line in closure.splitlines() if re.match(r"^[a-z0-9][a-z0-9.+-]+$", line)})
    query = test_vm.ssh(
        "for p in " + " ".join(wanted) + "; do dpkg-query -W -f='${db:Status-Abbrev}' $p 2>/dev/null "
        "| grep -q '^ii' || echo $p; done"
    )
    missing = query.stdout.split()
    assert query.returncode == 0, query.stderr
    if missing:
        for old in debs.glob("*.deb"):
            old.unlink()
        got = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True, timeout=600)
        if got.returncode != 0:
            pytest.skip(f"the packages {missing} could not be downloaded for the guest: {got.stderr.strip()[-300:]}")
        tar = subprocess.run(["tar", "-C", str(debs), "-cf", "-", "."], capture_output=True, check=True).stdout
        _as_root(test_vm, "rm -rf /tmp/onboot-debs && mkdir /tmp/onboot-debs && tar -C /tmp/onboot-debs -xf - "
                 "&& dpkg -i /tmp/onboot-debs/*.deb >/dev/null", tar)  # fmt: skip
    conf = {"cloud": "aws", "region": REGION, "bucket": BUCKET, "prefix": cloudinit.ONBOOT_PREFIX,
            "secret_id": SECRET_ID, **where}  # fmt: skip
    user_data = yaml.safe_load(
        cloudinit.user_data("aws", ssh_public_key=None, ssh_sources=[], onboot=conf).split("\n", 1)[1]
    )
    for f in user_data["write_files"]:
        if f["path"] in (cloudinit.ONBOOT_SCRIPT_PATH, cloudinit.ONBOOT_CONFIG_PATH):
            content = gzip.decompress(base64.b64decode(f["content"])) if f.get("encoding") else f["content"].encode()
            _as_root(test_vm, f"install -D -m {f['permissions']} /dev/stdin {f['path']}", content)
    # The bundle an air-gapped site's hosts read (the converge read it from the controller), and Mitogen.
    _push(test_vm, bundle, GUEST_BUNDLE)
    import ansible_mitogen
    import mitogen

    site = Path(mitogen.__file__).parent.parent
    _push(test_vm, site, GUEST_MITOGEN, Path(mitogen.__file__).parent.name, Path(ansible_mitogen.__file__).parent.name)
    _timed("on-boot: cloud-init stand-in", started)

    fingerprint = json.loads((bundle / "manifest.json").read_text())["fingerprint"]
    runner = f"http://10.0.2.2:{moto.rsplit(':', 1)[1]}"
    env = " ".join(f"{k}={v}" for k, v in KEYS.items())
    command = (
        f"{env} AI_ASSISTANT_ONBOOT_ENDPOINT={runner} ANSIBLE_STRATEGY=mitogen_linear "
        f"ANSIBLE_STRATEGY_PLUGINS={GUEST_MITOGEN}/ansible_mitogen/plugins/strategy ANSIBLE_FORCE_COLOR=0 "
        f"{cloudinit.ONBOOT_SCRIPT_PATH} --wait 0 -- -e @{GUEST_BUNDLE}/bundle-vars.yml "
        f"-e ai_assistant_bundle_dir={GUEST_BUNDLE} -e ai_assistant_bundle_fingerprint={fingerprint}"
    )
    started = time.monotonic()
    done = test_vm.ssh(command, timeout=3000)
    _timed("on-boot: boot script (guest)", started)
    # The booted host and the log host are one VM here. The boot converge, whose host is not the log host, turned the
    # receiving socket off (roles/journal_upload, as on every sender); the log host's own converge turns it on.
    _as_root(test_vm, "systemctl enable --now systemd-journal-remote.socket")
    log = test_vm.workdir / "onboot.log"
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    print(f"\non-boot log: {log}")
    m = RECAP.search(done.stdout)
    changed = [line for line in done.stdout.splitlines() if line.startswith("changed:")]
    return {"rc": done.returncode, "recap": m.groups() if m else None, "log": log, "out": done.stdout,
            "err": done.stderr, "changed": changed, "secret": secret, "address": address,
            "domain": domain}  # fmt: skip


def test_the_boot_script_converges_the_host_with_the_same_roles(onboot: dict[str, Any]) -> None:
    assert onboot["rc"] == 0 and onboot["recap"] is not None, (
        f"the boot script failed (log {onboot['log']}):\n{onboot['out'][-4000:]}\n{onboot['err'][-2000:]}"
    )
    ok, changed, unreachable, failed = (int(g) for g in onboot["recap"])
    print(f"\non-boot converge: ok={ok} changed={changed}: " + "; ".join(onboot["changed"])[:2000])
    assert failed == 0 and unreachable == 0
    # The host was converged already (as the folded testvm): the roles find little to change. Not zero: the host's
    # inventory name is `localhost` here, and the hand-off's own run would not see the bundle in the guest.
    assert changed <= 15, f"{changed} tasks changed on an already converged host (log {onboot['log']})"


def test_no_secret_in_the_boot_scripts_output(onboot: dict[str, Any]) -> None:
    values = [v for v in onboot["secret"].values() if isinstance(v, str) and len(v) >= 12]
    assert values
    leaked = [v[:4] for v in values if v in onboot["out"] or v in onboot["err"]]
    assert not leaked, f"secret values in the boot script's output (log {onboot['log']})"


def test_the_assistant_answers_a_signed_message_after_the_boot_converge(
    onboot: dict[str, Any], test_vm: TestVM, pebble_root: str
) -> None:
    assert onboot["rc"] == 0
    event_id = f"vm-onboot-{uuid.uuid4().hex[:8]}"
    raw, headers = signed_generic_request(
        message(event_id, "Say hi.", chat_id="vm-onboot"), secret=test_vm.connector_secret
    )
    with https(test_vm, pebble_root) as client:
        r = wait_until(
            lambda: (resp := client.post("/api/im/callback", content=raw, headers=headers)).status_code == 200 and resp,
            300,
            "the assistant accepting a signed message after the boot converge",
            interval=5,
        )
    assert r.status_code == 200
    replies = wait_until(lambda: test_vm.receiver.for_event(event_id), 600, f"the reply to {event_id}", interval=1)
    assert replies[0]["text"].strip()


def test_the_host_ships_its_journal_with_the_certificate_it_signed(onboot: dict[str, Any], test_vm: TestVM) -> None:
    """CIS 6.1.2.1 on a host no controller configured: journal-upload presents a client certificate the host signed
    with the issuing CA for the service's name (the only name that CA may sign), the log host's link verifies it
    against the root (leaf, issuing CA, root: ssl_verify_depth 2), and a line written after the boot arrives. The VM
    is its own log host, as in test_vm_hardening.py."""
    assert onboot["rc"] == 0
    tls, port, address = "/etc/ssl/ai-assistant", 19532, onboot["address"]
    from infra.secrets import ISSUING_CA_NAME

    cert = test_vm.ssh(f"openssl x509 -noout -subject -issuer -ext extendedKeyUsage -in {tls}/journal-upload.crt")
    assert cert.returncode == 0, cert.stderr
    assert f"subject=CN = {onboot['domain']}" in cert.stdout and ISSUING_CA_NAME in cert.stdout, cert.stdout
    assert "TLS Web Client Authentication" in cert.stdout and "Server" not in cert.stdout, cert.stdout
    # The root it verifies the log host with, from the secret (internal_ca mode copies it from the controller).
    assert test_vm.ssh(f"cat {tls}/internal-ca.crt").stdout.strip() == onboot["secret"]["internal_ca_cert_pem"].strip()
    unit = test_vm.ssh("systemctl show -p ExecStart --value systemd-journal-upload").stdout
    assert f"--url=https://{address}:{port}" in unit, unit
    tag = f"onboot-log-{int(time.time() * 1000)}"
    assert test_vm.ssh(f"logger -t {tag} shipped-from-a-booted-host").returncode == 0

    def remote() -> list[str]:
        out = test_vm.ssh(f"journalctl -D /var/log/journal/remote -t {tag} --output=cat --no-pager").stdout
        return [line for line in out.splitlines() if line.strip()]

    wait_until(remote, 180, f"the {tag} line on the log host", interval=3)
    assert remote() == ["shipped-from-a-booted-host"]
    # The link logs a connection when it closes; the upload's stays open while it follows the journal, so a probe
    # with the same certificate and key shows the subject nginx verified through the issuing CA.
    probe = test_vm.ssh(
        f"curl -sS -m 20 -o /dev/null -w '%{{http_code}}' --cacert {tls}/internal-ca.crt "
        f"--cert {tls}/journal-upload.crt --key {tls}/journal-upload.key https://{address}:{port}/"
    )
    assert probe.returncode == 0 and probe.stdout != "000", (probe.stdout, probe.stderr)
    link = wait_until(
        lambda: [
            line
            for line in test_vm.ssh("journalctl -t link_tls --since=-10min --no-pager -o cat").stdout.splitlines()
            if f"port={port}" in line and f'client="CN={onboot["domain"]}"' in line and "verify=SUCCESS" in line
        ],
        30,
        "the link's line for the booted host's certificate",
        interval=2,
    )
    assert link
