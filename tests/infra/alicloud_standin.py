"""A STAND-IN for an Alibaba Cloud account on loopback: an ECS metadata service, KMS GetSecretValue and OSS objects.

A cloud account cannot exist here, so this plays the three endpoints the on-boot path talks to, and refuses what the
real ones refuse, checked independently of infra/boot_configure.py (its own implementation of the documented
algorithms, proven against Alibaba's published example and against the OSS SDK's requests in
tests/infra/test_onboot_alicloud.py):

- metadata (security hardening mode): a token from `PUT /latest/api/token` with a TTL of 1..21600 s, required on
  every read; the RAM role's STS credentials only under the role's own name
  (https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata);
- KMS (RPC style): HMAC-SHA1 signature V1 over the canonicalized query, a fresh nonce, a timestamp within 15 minutes,
  and the STS token as SecurityToken for the role's AccessKey (https://www.alibabacloud.com/help/doc-detail/127287.htm);
- OSS: signature V4 (OSS4-HMAC-SHA256) in the Authorization header, and x-oss-security-token for the role's AccessKey
  (https://www.alibabacloud.com/help/en/oss/developer-reference/recommend-to-use-signature-version-4);
- RAM: the role's requests are judged by the policy document the program declares (explicit Deny first, then Allow,
  else denied: https://www.alibabacloud.com/help/en/oss/user-guide/how-oss-works-with-ram), so an object outside
  `onboot/` or another secret is refused with 403 as it would be. The operator's AccessKey (the hand-off's) may write.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from secrets import token_urlsafe
from typing import Any

ACCOUNT = "1234567890123456"
SKEW = datetime.timedelta(minutes=15)


def _pct(value: str) -> str:
    return urllib.parse.quote(value, safe="~")


def rpc_string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(f"{_pct(k)}={_pct(params[k])}" for k in sorted(params) if k != "Signature")
    return f"{method}&%2F&{_pct(canonical)}"


def rpc_expected(secret: str, method: str, params: dict[str, str]) -> str:
    mac = hmac.new((secret + "&").encode(), rpc_string_to_sign(method, params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def oss_v4_expected(
    secret: str,
    method: str,
    bucket: str,
    key: str,
    query: dict[str, str],
    headers: dict[str, str],
    auth: dict[str, str],
) -> str:
    """The V4 signature OSS computes for a request (documented canonical request, string to sign and signing key)."""
    _, day, region, product, terminal = auth["Credential"].split("/")
    additional = [h for h in auth.get("AdditionalHeaders", "").split(";") if h]
    low = {k.lower(): v.strip() for k, v in headers.items()}
    names = sorted(k for k in low if k.startswith("x-oss-") or k in ("content-type", "content-md5") or k in additional)
    canonical_query = "&".join(f"{_pct(k)}={_pct(v)}" if v else _pct(k) for k, v in sorted(query.items()))
    canonical = "\n".join(
        [
            method,
            "/" + urllib.parse.quote(f"{bucket}/{key}", safe="/~"),
            canonical_query,
            "".join(f"{k}:{low[k]}\n" for k in names),
            ";".join(additional),
            low.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ]
    )
    scope = f"{day}/{region}/{product}/{terminal}"
    to_sign = "\n".join(["OSS4-HMAC-SHA256", low["x-oss-date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("aliyun_v4" + secret).encode()
    for part in (day, region, product, terminal):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()


def ram_allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """RAM's evaluation of one identity policy: an explicit Deny wins, then an Allow, else denied."""

    def matches(stmt: dict[str, Any]) -> bool:
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        resources = stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]
        return any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        )

    statements = policy.get("Statement", [])
    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


@dataclass
class AlibabaStandIn:
    """State of the stand-in account; `url` once started. `refused` lists each refusal's reason, `seen` what passed."""

    region: str
    role: str
    role_policy: dict[str, Any] = field(default_factory=dict)
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    # The operator's AccessKey (the hand-off publishes with it) and the RAM role's STS credentials.
    controller: tuple[str, str] = field(default_factory=lambda: ("LTAI5tControllerKey0001", token_urlsafe(24)))
    sts: tuple[str, str, str] = field(
        default_factory=lambda: ("STS.NTestRoleKey0001", token_urlsafe(24), token_urlsafe(48))
    )
    refused: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    url: str = ""
    _tokens: set[str] = field(default_factory=set)
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def secret_arn(self, name: str) -> str:
        return f"acs:kms:{self.region}:{ACCOUNT}:secret/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- answers ---
    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, code: str, why: str, *, xml: bool = False) -> None:
        with self.server.state._lock:
            self.server.state.refused.append(f"{self.command} {self.path.split('?')[0]}: {code}: {why}")
        if xml:
            body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{why}</Message></Error>".encode()
            self._send(status, body, "application/xml")
        else:
            self._send(status, json.dumps({"Code": code, "Message": why, "RequestId": "standin"}).encode())

    # --- routing ---
    def do_PUT(self) -> None:
        if self.path == "/latest/api/token":
            return self._metadata_token()
        return self._oss("PUT")

    def do_GET(self) -> None:
        if self.path.startswith("/latest/"):
            return self._metadata_read()
        if self.path.startswith("/?"):
            return self._kms()
        return self._oss("GET")

    # --- the metadata service ---
    def _metadata_token(self) -> None:
        ttl = self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self._refuse(400, "MissingParameter", "X-aliyun-ecs-metadata-token-ttl-seconds 1..21600")
        token = token_urlsafe(32)
        with self.server.state._lock:
            self.server.state._tokens.add(token)
        self._send(200, token.encode(), "text/plain")

    def _metadata_read(self) -> None:
        state = self.server.state
        if self.headers.get("X-aliyun-ecs-metadata-token") not in state._tokens:
            # Security hardening mode: a read without a valid token is refused.
            return self._refuse(401, "Unauthorized", "no valid X-aliyun-ecs-metadata-token")
        prefix = "/latest/meta-data/ram/security-credentials/"
        if not self.path.startswith(prefix) or urllib.parse.unquote(self.path[len(prefix) :]) != state.role:
            return self._refuse(404, "NotFound", f"{self.path}: not this instance's RAM role")
        ak, sk, token = state.sts
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        body = {"AccessKeyId": ak, "AccessKeySecret": sk, "SecurityToken": token, "Code": "Success",
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "LastUpdated": "now"}  # fmt: skip
        state.seen.append("metadata: credentials")
        self._send(200, json.dumps(body).encode())

    # --- KMS (RPC) ---
    def _kms(self) -> None:
        state = self.server.state
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))
        ak, sk, token = state.sts
        for name, want in (("SignatureMethod", "HMAC-SHA1"), ("SignatureVersion", "1.0"), ("Version", "2016-01-20")):
            if params.get(name) != want:
                return self._refuse(400, "InvalidParameter", f"{name} must be {want}")
        if params.get("AccessKeyId") != ak:
            return self._refuse(404, "InvalidAccessKeyId.NotFound", "not the role's STS AccessKey")
        if params.get("SecurityToken") != token:
            return self._refuse(400, "InvalidSecurityToken.Mismatch", "SecurityToken is not the role's STS token")
        try:
            stamp = datetime.datetime.strptime(params.get("Timestamp", ""), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.UTC
            )
        except ValueError:
            return self._refuse(400, "InvalidTimeStamp.Format", "Timestamp is not ISO 8601 UTC")
        if abs(datetime.datetime.now(datetime.UTC) - stamp) > SKEW:
            return self._refuse(400, "InvalidTimeStamp.Expired", "Timestamp more than 15 minutes off")
        nonce = params.get("SignatureNonce", "")
        with state._lock:
            if not nonce or nonce in state._nonces:
                return self._refuse(400, "SignatureNonceUsed", "SignatureNonce missing or used before")
            state._nonces.add(nonce)
        if not hmac.compare_digest(params.get("Signature", ""), rpc_expected(sk, "GET", params)):
            return self._refuse(400, "SignatureDoesNotMatch", "the RPC signature V1 does not match")
        if params.get("Action") != "GetSecretValue":
            return self._refuse(400, "InvalidAction.NotFound", f"{params.get('Action')}: not played by the stand-in")
        name = params.get("SecretName", "")
        if not ram_allows(state.role_policy, "kms:GetSecretValue", state.secret_arn(name)):
            return self._refuse(403, "Forbidden.NoPermission", f"the RAM role may not read {name}")
        if name not in state.secrets:
            return self._refuse(404, "Forbidden.ResourceNotFound", f"no secret {name}")
        state.seen.append(f"kms: GetSecretValue {name}")
        answer = {"SecretName": name, "SecretData": state.secrets[name], "SecretDataType": "text",
                  "VersionId": "v1", "RequestId": "standin"}  # fmt: skip
        self._send(200, json.dumps(answer).encode())

    # --- OSS (path-style: /<bucket>/<key>) ---
    def _oss(self, method: str) -> None:
        state = self.server.state
        parts = urllib.parse.urlsplit(self.path)
        bucket, _, key = urllib.parse.unquote(parts.path).lstrip("/").partition("/")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "PUT" else b""
        auth_header = self.headers.get("Authorization", "")
        if not auth_header.startswith("OSS4-HMAC-SHA256 "):
            return self._refuse(403, "AccessDenied", "not a V4 (OSS4-HMAC-SHA256) signature", xml=True)
        auth = dict(
            item.strip().split("=", 1) for item in auth_header.removeprefix("OSS4-HMAC-SHA256 ").split(",") if item
        )
        try:
            ak, day, region, product, terminal = auth["Credential"].split("/")
        except (KeyError, ValueError):
            return self._refuse(400, "InvalidArgument", "Credential is not <ak>/<day>/<region>/oss/aliyun_v4_request")
        if (product, terminal, region) != ("oss", "aliyun_v4_request", state.region):
            return self._refuse(400, "InvalidArgument", f"scope {day}/{region}/{product}/{terminal}", xml=True)
        stamp = self.headers.get("x-oss-date", "")
        try:
            when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            return self._refuse(403, "AccessDenied", "x-oss-date missing or not ISO 8601 basic", xml=True)
        if stamp[:8] != day or abs(datetime.datetime.now(datetime.UTC) - when) > SKEW:
            why = "x-oss-date off by 15 minutes or not the scope's day"
            return self._refuse(403, "RequestTimeTooSkewed", why, xml=True)
        role = ak == state.sts[0]
        if role:
            if self.headers.get("x-oss-security-token") != state.sts[2]:
                return self._refuse(403, "InvalidSecurityToken", "x-oss-security-token is not the STS token", xml=True)
            secret = state.sts[1]
        elif ak == state.controller[0]:
            secret = state.controller[1]
        else:
            return self._refuse(403, "InvalidAccessKeyId", f"{ak}: unknown AccessKey", xml=True)
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        headers = {k: v for k, v in self.headers.items()}
        expected = oss_v4_expected(secret, method, bucket, key, query, headers, auth)
        if not hmac.compare_digest(auth.get("Signature", ""), expected):
            return self._refuse(403, "SignatureDoesNotMatch", "the V4 signature does not match", xml=True)
        action = "oss:GetObject" if method == "GET" else "oss:PutObject"
        if role and not ram_allows(state.role_policy, action, f"acs:oss:{state.region}:{ACCOUNT}:{bucket}/{key}"):
            return self._refuse(403, "AccessDenied", f"the RAM role may not {action} {bucket}/{key}", xml=True)
        who = "role" if role else "controller"
        if method == "PUT":
            state.objects[(bucket, key)] = body
            state.seen.append(f"oss: {who} PutObject {bucket}/{key}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.send_header("ETag", f'"{hashlib.md5(body).hexdigest().upper()}"')  # noqa: S324 - OSS's ETag
            self.end_headers()
            return None
        if (bucket, key) not in state.objects:
            return self._refuse(404, "NoSuchKey", f"{bucket}/{key}", xml=True)
        state.seen.append(f"oss: {who} GetObject {bucket}/{key}")
        return self._send(200, state.objects[(bucket, key)], "application/octet-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: AlibabaStandIn


@contextmanager
def running(state: AlibabaStandIn) -> Iterator[AlibabaStandIn]:
    """Serve the stand-in on 127.0.0.1 (a free port) until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
