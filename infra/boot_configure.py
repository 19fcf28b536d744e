#!/usr/bin/python3
"""On-boot configuration of an autoscaled assistant host (docs/adr/0039-autoscaled-hosts-configure-themselves.md).

Cloud-init writes this file and /etc/ai-assistant/onboot.json (bucket, prefix, secret id, region, colour, zone: no
secret) and runs it once. It reads the secret through the instance role, downloads the artifact the hand-off
published (infra/handoff.py `publish_onboot`), checks its sha256, installs Ansible from the artifact into a venv,
adds this host to the static inventory as `localhost` in its colour and zone groups and runs playbooks/site.yml
limited to it with `-c local`: the same roles the hand-off runs over SSH.

The cloud is one small protocol (`Cloud`: read the secret, get an object): on AWS through python3-boto3 and the
instance profile; on Alibaba Cloud through the ECS instance's RAM role, whose STS credentials come from the metadata
service (security hardening mode), signing the two requests it makes (KMS GetSecretValue, OSS GetObject) with the
documented algorithms: Debian 12 packages no Alibaba Cloud client (docs/adr/0039, amendment).

Standalone on purpose: Debian 12's python3 (and python3-boto3 on AWS) only, the rest comes from the artifact, no
import from this repository. Bad input stops it with one line on stderr and exit status 2, before anything is
installed: the artifact and the venv are built in a staging directory and renamed into place only once both are
complete.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Protocol

# The uploader (infra.handoff.publish_onboot) writes these keys under the prefix; tests/infra check both sides agree.
POINTER = "current.sha256"  # "<sha256>  <artifact name>\n": switched after the artifact itself is in place


def artifact_name(sha256: str) -> str:
    """The artifact's object name under the prefix: named by its digest, so a pointer never names a half upload."""
    return f"artifact-{sha256}.tar"


def object_key(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}"


CONFIG = Path("/etc/ai-assistant/onboot.json")
WORK = Path("/var/lib/ai-assistant-onboot")
# Keys of the secret that are not Ansible variables: the boot script signs this host's certificate with them.
ISSUING_KEY, ISSUING_CERT, ROOT_CERT = "issuing_ca_key_pem", "issuing_ca_cert_pem", "internal_ca_cert_pem"
REQUIRED = ("cloud", "region", "bucket", "prefix", "secret_id", "color", "zone")
# What a cloud needs besides: on Alibaba Cloud, the RAM role whose credentials the metadata service hands out.
CLOUD_REQUIRED = {"aws": (), "alicloud": ("ram_role",)}


class BootError(Exception):
    """Bad input: one line naming the file, key or object."""


def load_config(path: Path) -> dict[str, str]:
    try:
        conf = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BootError(f"{path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(conf, dict):
        raise BootError(f"{path}: expected a JSON object")
    for key in REQUIRED:
        if not isinstance(conf.get(key), str) or not conf[key]:
            raise BootError(f"{path}: `{key}` is missing")
    if conf["cloud"] not in CLOUD_REQUIRED:
        raise BootError(f"{path}: cloud `{conf['cloud']}` is not one of {', '.join(CLOUD_REQUIRED)}")
    for key in CLOUD_REQUIRED[conf["cloud"]]:
        if not isinstance(conf.get(key), str) or not conf[key]:
            raise BootError(f"{path}: `{key}` is missing (cloud {conf['cloud']})")
    return conf


class Cloud(Protocol):
    """What the boot script needs of a cloud: its one secret and objects under the artifact prefix."""

    def read_secret(self) -> str:
        """The secret's value; BootError naming the secret otherwise."""
        ...

    def get_object(self, key: str, dest: Path | None = None) -> bytes:
        """The object's bytes, or written to `dest` (then b""); BootError naming the object otherwise."""
        ...


def cloud_for(conf: dict[str, str]) -> Cloud:
    return AlibabaCloud(conf) if conf["cloud"] == "alicloud" else Aws(conf)


# --- AWS through the instance profile (boto3 finds the role's credentials in the metadata service) ---------------

# A stand-in for the cloud account in tests (moto's server, or tests/infra/alicloud_standin.py), never set on a host.
ENDPOINT_ENV = "AI_ASSISTANT_ONBOOT_ENDPOINT"


class Aws:
    def __init__(self, conf: dict[str, str]) -> None:
        self.conf = conf

    def _client(self, service: str) -> Any:
        import boto3  # type: ignore[import-untyped]  # Debian 12's python3-boto3 (cloud-init installs it); imported here so --help works without it

        endpoint = os.environ.get(ENDPOINT_ENV) or None
        return boto3.client(service, region_name=self.conf["region"], endpoint_url=endpoint)

    def read_secret(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        secret_id = self.conf["secret_id"]
        try:
            raw: str = self._client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        except ClientError as e:
            raise BootError(f"secret {secret_id}: {e.response['Error'].get('Code', 'error')}") from None
        except BotoCoreError as e:
            raise BootError(f"secret {secret_id}: {type(e).__name__}") from None
        return raw

    def get_object(self, key: str, dest: Path | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.conf["bucket"]
        s3 = self._client("s3")
        try:
            if dest is not None:
                s3.download_file(bucket, key, str(dest))
                return b""
            body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
        except ClientError as e:
            raise BootError(f"s3://{bucket}/{key}: {e.response['Error'].get('Code', 'error')}") from None
        except BotoCoreError as e:
            raise BootError(f"s3://{bucket}/{key}: {type(e).__name__}") from None


# --- Alibaba Cloud through the instance's RAM role -----------------------------------------------------------------

# The ECS metadata service; the launch template requires tokens (security hardening mode), so every read carries one:
# https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata
METADATA = "http://100.100.100.200"
METADATA_ENV = "AI_ASSISTANT_ONBOOT_METADATA"  # the tests' stand-in for the metadata service, never set on a host
TIMEOUT_S = 60


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> urllib.request.Request:
    if not url.startswith(("http://", "https://")):
        raise BootError(f"{url.split('?')[0]}: not an http(s) endpoint")
    return urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310 - http(s), checked above


def _http(req: urllib.request.Request, dest: Path | None = None) -> tuple[int, bytes]:
    """(status, body); the body of a 2xx answer goes to `dest` when given. Network errors are (0, reason)."""
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - fixed http(s) endpoints
            if dest is None:
                return resp.status, resp.read()
            with dest.open("wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
            return resp.status, b""
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(getattr(e, "reason", e)).encode()


def _detail(status: int, code: str | None, body: bytes) -> str:
    """One line for a failed request: the service's error code, else the HTTP status, else the network error."""
    if status:
        return code or f"HTTP {status}"
    return " ".join(body.decode(errors="replace").split())[:200] or "no answer"


def _percent(value: str) -> str:
    """RFC 3986 encoding, as both signatures define it: only A-Z a-z 0-9 - _ . ~ stay."""
    return urllib.parse.quote(value, safe="~")


def rpc_signature(secret: str, method: str, params: dict[str, str]) -> str:
    """Alibaba Cloud's RPC signature V1 (HMAC-SHA1): https://www.alibabacloud.com/help/doc-detail/127287.htm."""
    canonical = "&".join(f"{_percent(k)}={_percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{_percent('/')}&{_percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def oss_v4_authorization(
    access_key_id: str, secret: str, region: str, method: str, bucket: str, key: str, headers: dict[str, str]
) -> str:
    """The Authorization header of an OSS request, signature V4 (OSS4-HMAC-SHA256, unsigned payload):
    https://www.alibabacloud.com/help/en/oss/developer-reference/recommend-to-use-signature-version-4.
    `headers` holds x-oss-date and the other x-oss-* headers sent; all of them are signed."""
    stamp = headers["x-oss-date"]
    day = stamp[:8]
    signed = {k.lower(): v.strip() for k, v in headers.items()}
    names = sorted(k for k in signed if k.startswith("x-oss-") or k in ("content-type", "content-md5"))
    canonical_headers = "".join(f"{k}:{signed[k]}\n" for k in names)
    uri = "/" + urllib.parse.quote(f"{bucket}/{key}" if key else f"{bucket}/", safe="/~")
    canonical = "\n".join([method, uri, "", canonical_headers, "", "UNSIGNED-PAYLOAD"])
    scope = f"{day}/{region}/oss/aliyun_v4_request"
    to_sign = "\n".join(["OSS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing = f"aliyun_v4{secret}".encode()
    for part in (day, region, "oss", "aliyun_v4_request"):
        signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"OSS4-HMAC-SHA256 Credential={access_key_id}/{scope},Signature={signature}"


class AlibabaCloud:
    """KMS GetSecretValue and OSS GetObject with the STS credentials of the instance's RAM role.

    Both through the VPC endpoints of the region (no NAT needed): KMS's `kms-vpc.<region>.aliyuncs.com`
    (https://www.alibabacloud.com/help/en/kms/key-management-service/developer-reference/api-kms-2016-01-20-endpoint)
    and OSS's internal endpoint `oss-<region>-internal.aliyuncs.com`."""

    def __init__(self, conf: dict[str, str]) -> None:
        self.conf = conf
        self.metadata = (os.environ.get(METADATA_ENV) or METADATA).rstrip("/")
        self.endpoint = (os.environ.get(ENDPOINT_ENV) or "").rstrip("/")

    def credentials(self) -> tuple[str, str, str]:
        """(AccessKeyId, AccessKeySecret, SecurityToken) of the RAM role, read fresh each time: they rotate."""
        role = self.conf["ram_role"]
        where = f"metadata service, RAM role {role}"
        token_req = _request(
            f"{self.metadata}/latest/api/token", "PUT", {"X-aliyun-ecs-metadata-token-ttl-seconds": "300"}
        )
        status, token = _http(token_req)
        if status != 200 or not token:
            raise BootError(f"{where}: no metadata token ({_detail(status, None, token)})")
        req = _request(
            f"{self.metadata}/latest/meta-data/ram/security-credentials/{urllib.parse.quote(role)}",
            headers={"X-aliyun-ecs-metadata-token": token.decode()},
        )
        status, body = _http(req)
        try:
            creds = json.loads(body) if status == 200 else {}
        except json.JSONDecodeError:
            creds = {}
        if creds.get("Code") != "Success" or not all(
            isinstance(creds.get(k), str) for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken")
        ):
            # 404: the instance has no such role (the launch template's ram_role_name and onboot.json disagree).
            raise BootError(f"{where}: no credentials ({_detail(status, None, body)})")
        return creds["AccessKeyId"], creds["AccessKeySecret"], creds["SecurityToken"]

    def read_secret(self) -> str:
        name = self.conf["secret_id"]
        key_id, secret, token = self.credentials()
        params = {
            "Action": "GetSecretValue",
            "SecretName": name,
            "Version": "2016-01-20",
            "Format": "JSON",
            "AccessKeyId": key_id,
            "SecurityToken": token,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": str(uuid.uuid4()),
            "Timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        params["Signature"] = rpc_signature(secret, "GET", params)
        base = self.endpoint or f"https://kms-vpc.{self.conf['region']}.aliyuncs.com"
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        status, body = _http(_request(f"{base}/?{query}"))
        try:
            answer = json.loads(body) if status else {}
        except json.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if status != 200:
            code = answer.get("Code")
            raise BootError(f"secret {name}: {_detail(status, code if isinstance(code, str) else None, body)}")
        if not isinstance(answer.get("SecretData"), str):
            raise BootError(f"secret {name}: the answer has no SecretData")
        data: str = answer["SecretData"]
        return data

    def get_object(self, key: str, dest: Path | None = None) -> bytes:
        bucket, region = self.conf["bucket"], self.conf["region"]
        key_id, secret, token = self.credentials()
        headers = {
            "x-oss-date": datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ"),
            "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
            "x-oss-security-token": token,
        }
        headers["Authorization"] = oss_v4_authorization(key_id, secret, region, "GET", bucket, key, headers)
        path = urllib.parse.quote(key, safe="/~")
        # The region's internal endpoint, bucket in the host name; a stand-in takes the bucket in the path. The V4
        # signature covers /<bucket>/<key> either way.
        internal = f"https://{bucket}.oss-{region}-internal.aliyuncs.com/{path}"
        url = f"{self.endpoint}/{bucket}/{path}" if self.endpoint else internal
        status, body = _http(_request(url, headers=headers), dest)
        if status != 200:
            code = re.search(rb"<Code>([^<]{1,64})</Code>", body) if status else None
            raise BootError(f"oss://{bucket}/{key}: {_detail(status, code.group(1).decode() if code else None, body)}")
        return body


def read_secret(cloud: Cloud, conf: dict[str, str]) -> dict[str, Any]:
    raw = cloud.read_secret()
    try:
        values = json.loads(raw)
    except json.JSONDecodeError:
        raise BootError(f"secret {conf['secret_id']}: not a JSON object") from None
    if not isinstance(values, dict):
        raise BootError(f"secret {conf['secret_id']}: not a JSON object")
    return values


def fetch_artifact(cloud: Cloud, conf: dict[str, str], staging: Path, wait_s: float) -> tuple[Path, str]:
    """The artifact the pointer names, checked against the pointer's digest. Waits for the pointer (a host the first
    `pulumi up` starts boots before the hand-off has published anything)."""
    pointer_key = object_key(conf["prefix"], POINTER)
    scheme = "oss" if conf["cloud"] == "alicloud" else "s3"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pointer = cloud.get_object(pointer_key).decode()
            break
        except BootError as e:
            # Without s3:ListBucket (least privilege) a missing object reads as AccessDenied, not NoSuchKey.
            absent = any(code in str(e) for code in ("NoSuchKey", "404", "AccessDenied", "403"))
            if not absent or time.monotonic() >= deadline:
                raise BootError(
                    f"{e} (not published by the hand-off yet, or not readable by this host's role)"
                ) from None
            time.sleep(15)
    fields = pointer.split()
    if len(fields) != 2 or len(fields[0]) != 64 or fields[1] != artifact_name(fields[0]):
        raise BootError(f"{scheme}://{conf['bucket']}/{pointer_key}: expected `<sha256>  {artifact_name('<sha256>')}`")
    expected, name = fields
    dest = staging / name
    cloud.get_object(object_key(conf["prefix"], name), dest)
    h = hashlib.sha256()
    with dest.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise BootError(f"{scheme}://{conf['bucket']}/{object_key(conf['prefix'], name)}: sha256 mismatch")
    return dest, expected


# --- install and run ---------------------------------------------------------------------------------------------


def contained_members(tar: tarfile.TarFile, dest: Path, name: str) -> list[tarfile.TarInfo]:
    """The members, refusing what the "data" extraction filter refuses: paths or links that leave `dest`, device
    files. The artifact's checksum was checked already; this keeps a bad build from writing outside the staging
    directory as root."""
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        target = (root / member.name).resolve()
        if member.issym():
            linked = (target.parent / member.linkname).resolve()
        elif member.islnk():
            linked = (root / member.linkname).resolve()
        else:
            linked = target
        if member.isdev() or not (target.is_relative_to(root) and linked.is_relative_to(root)):
            raise BootError(f"{name}: member {member.name!r} would be written outside the artifact's directory")
    return members


def unpack(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:
                # Debian 12's python3 (3.11.2) predates extraction filters (3.11.4): the same refusals by hand.
                tar.extractall(dest, members=contained_members(tar, dest, archive.name))  # noqa: S202
    except (tarfile.TarError, OSError) as e:
        raise BootError(f"{archive.name}: not a readable artifact ({type(e).__name__})") from None
    for part in ("repo/playbooks/site.yml", "inventory.yml", "ansible", "collections", "manifest.json"):
        if not (dest / part).exists():
            raise BootError(f"{archive.name}: `{part}` is missing from the artifact")


def install_ansible(root: Path) -> Path:
    """ansible-core from the artifact's wheels (the roles need 2.19; Debian 12 ships 2.14), offline."""
    venv = root / "venv"
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(root / "ansible")]
    for step, cmd in (("python3 -m venv", [sys.executable, "-m", "venv", str(venv)]), ("pip", [*pip, "ansible-core"])):
        if subprocess.run(cmd).returncode != 0:
            raise BootError(f"artifact: `{step}` failed installing ansible-core from its wheels")
    return venv


def local_inventory(static: dict[str, Any], color: str, zone: str) -> dict[str, Any]:
    """The hand-off's static inventory with this host as `localhost` in the assistant, colour and zone groups."""
    children = static.setdefault("all", {}).setdefault("children", {})
    host = {
        "ansible_connection": "local",
        "ansible_become": False,  # the boot script runs as root
        "ansible_python_interpreter": "/usr/bin/python3",
        "ai_assistant_color": color,
        "ai_assistant_zone": zone,
    }
    # Host variables sit once, in the role group (as infra.inventory.render writes them).
    for group, entry in (("assistant", host), (f"color_{color}", None), (f"zone_{_group(zone)}", None)):
        g = children.setdefault(group, {})
        if not isinstance(g.get("hosts"), dict):
            g["hosts"] = {}
        g["hosts"]["localhost"] = entry
    return static


def _group(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def sign_host_certificate(
    values: dict[str, Any], domains: list[str], days: int, client: bool = False
) -> tuple[str, str]:
    """A key and a certificate for this host's names, signed with the issuing CA from the secret (the root key never
    leaves the controller): for a server (nginx), or with `client` for a client that proves who it is to an internal
    server (journal-upload to the log host). Returns (chain: leaf then issuing CA, key), both PEM. Runs in the
    artifact's venv, whose ansible-core brings `cryptography`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(values[ISSUING_KEY].encode(), None)
    ca_cert = x509.load_pem_x509_certificate(values[ISSUING_CERT].encode())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise BootError(f"secret: {ISSUING_KEY} is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain.decode(), pem_key.decode()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def prepare_play(root: Path, conf: dict[str, str], values: dict[str, Any], private: Path) -> list[str]:
    """Runs in the venv (PyYAML, cryptography): writes the local inventory and the 0600 vars file into `private`,
    returns ansible-playbook's arguments after the playbook."""
    import yaml

    static = yaml.safe_load((root / "inventory.yml").read_text())
    if not isinstance(static, dict) or not isinstance(static.get("all"), dict):
        raise BootError("inventory.yml: expected an inventory with an `all` group")
    inventory = local_inventory(static, conf["color"], conf["zone"])
    manifest = json.loads((root / "manifest.json").read_text())
    play_vars = {k: v for k, v in values.items() if k not in (ISSUING_KEY, ISSUING_CERT, ROOT_CERT)}
    play_vars["assistant_wheel"] = str(root / manifest["wheel"])
    play_vars["assistant_wheelhouse"] = str(root / manifest["wheelhouse"])
    # What this host sees of the inventory's variables: `all`, then its groups (Ansible's order for groups of one
    # depth is by name, and assistant < color_* < zone_*).
    children = inventory["all"]["children"]
    all_vars = dict(inventory["all"].get("vars") or {})
    for group in ("assistant", f"color_{conf['color']}", f"zone_{_group(conf['zone'])}"):
        all_vars |= children.get(group, {}).get("vars") or {}
    issuing = isinstance(values.get(ISSUING_KEY), str) and isinstance(values.get(ISSUING_CERT), str)
    domains = list(all_vars.get("tls_domains") or [])
    if all_vars.get("tls_mode") == "internal_ca":
        # The tls role signs internal certificates on the controller with the root key, which is not here: this host
        # signs its own with the issuing CA and installs it as the role's `provided` certificate. As this host's own
        # variables, not extra vars: those would outrank the journal play's certificate below as well.
        if not issuing:
            raise BootError(f"secret {conf['secret_id']}: {ISSUING_KEY} and {ISSUING_CERT} are required")
        chain, key = sign_host_certificate(values, domains, 397)
        inventory["all"]["children"]["assistant"]["hosts"]["localhost"] |= {
            "tls_mode": "provided",
            "tls_provided_certificate": chain,
            "tls_provided_private_key": key,
        }
    root_cert = values.get(ROOT_CERT)
    if isinstance(root_cert, str):
        # What the playbooks verify internal links against (the GPU hosts' model server, the log host;
        # playbooks/group_vars/all.yml), read on the controller elsewhere; public, but it comes with the secret.
        play_vars["ai_assistant_internal_ca_cert"] = root_cert
    # The journal to the log host (site.yml's import of playbooks/monitoring.yml), whose link admits clients with a
    # certificate chained to the root: signed here with the issuing CA for the service's name (the only name it may
    # sign), whatever serves the site. Without the issuing CA or the root, that play would make a CA of its own on this
    # host: no shipping then.
    ships = issuing and isinstance(root_cert, str) and bool(domains)
    if ships:
        chain, key = sign_host_certificate(values, domains[:1], 397, client=True)
        play_vars |= {"ai_assistant_journal_certificate": chain, "ai_assistant_journal_private_key": key}
    play_vars["ai_assistant_log_shipping"] = ships
    _write_private(private / "inventory.yml", yaml.safe_dump(inventory, sort_keys=False, width=1000))
    _write_private(private / "vars.json", json.dumps(play_vars))
    return ["-i", str(private / "inventory.yml"), "-e", f"@{private / 'vars.json'}"]


def run_play(root: Path, venv: Path, conf: dict[str, str], values: dict[str, Any], extra: list[str]) -> int:
    private = Path(tempfile.mkdtemp(prefix="ai-assistant-onboot."))
    try:
        # The venv's Python: PyYAML and cryptography come with ansible-core's wheels; the secret goes over stdin.
        stage = subprocess.run(
            [str(venv / "bin" / "python"), __file__, "--prepare", str(root), str(private)],
            input=json.dumps({"conf": conf, "values": values}),
            text=True,
        )
        if stage.returncode != 0:
            return stage.returncode
        args = json.loads((private / "args.json").read_text())
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(root / "repo" / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
            "ANSIBLE_ROLES_PATH": str(root / "repo" / "roles"),
        }
        cmd = [str(venv / "bin" / "ansible-playbook"), *args, "-c", "local", "--limit", "localhost"]
        cmd += [*extra, "playbooks/site.yml"]
        return subprocess.run(cmd, cwd=root / "repo", env=env, stdin=subprocess.DEVNULL).returncode
    finally:
        shutil.rmtree(private, ignore_errors=True)


def configure(conf: dict[str, str], work: Path, extra: list[str], wait_s: float) -> int:
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    cloud = cloud_for(conf)
    # The secret first: a host without it has nothing to configure, and nothing is downloaded for it.
    values = read_secret(cloud, conf)
    staging = Path(tempfile.mkdtemp(prefix="staging.", dir=work))
    try:
        archive, digest = fetch_artifact(cloud, conf, staging, wait_s)
        root = work / f"artifact-{digest[:16]}"
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            unpack(archive, staging / "root")
            (staging / "root").rename(root)
            try:
                # The venv is made in place (its scripts name their own path); a failure removes the whole tree.
                install_ansible(root)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
            (root / ".complete").touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    venv = root / "venv"
    return run_play(root, venv, conf, values, extra)


def _prepare_main(root: Path, private: Path) -> int:
    data = json.loads(sys.stdin.read())
    try:
        args = prepare_play(root, data["conf"], data["values"], private)
    except BootError as e:
        print(f"ai-assistant on-boot: {e}", file=sys.stderr)
        return 2
    (private / "args.json").write_text(json.dumps(args))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--prepare"]:
        return _prepare_main(Path(argv[1]), Path(argv[2]))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            f"The config names {', '.join(REQUIRED)} (and ram_role on alicloud); no secret. Clouds: aws reads the "
            "Secrets Manager secret and the S3 bucket with python3-boto3 through the instance profile; alicloud "
            "reads the KMS secret and the OSS bucket with the STS credentials of the instance's RAM role, from the "
            "metadata service in security hardening mode. Bad input: one line on stderr, exit status 2, nothing "
            "installed. docs/adr/0039-autoscaled-hosts-configure-themselves.md"
        ),
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help=f"the on-boot config (default {CONFIG})")
    parser.add_argument("--work", type=Path, default=WORK, help=f"the artifact and its venv (default {WORK})")
    parser.add_argument("--wait", type=float, default=1800, help="seconds to wait for the hand-off's artifact")
    parser.add_argument("extra", nargs="*", help="after --: more ansible-playbook arguments (an air-gapped bundle's)")
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        return configure(load_config(args.config), args.work, args.extra, args.wait)
    except BootError as e:
        print(f"ai-assistant on-boot: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
