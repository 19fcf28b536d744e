"""A local stand-in for the five IM platforms' APIs (the one thing that cannot exist here), on 127.0.0.1.

It answers like the real APIs do on the paths our connectors call (token endpoints included), checks the access
token a send carries against the one it issued, and records every request. Tests can script failures (429, 5xx,
revoked tokens), make a request stall after it was posted or hang without being posted, and, for DingTalk Stream,
push CALLBACK frames down a real WebSocket and read the acks that come back, and for Telegram long polling, hold
updates that getUpdates hands out with the Bot API's offset semantics (an update is forgotten only when a later
getUpdates passes an offset above its update_id; a getUpdates waits up to its `timeout`; a second concurrent one ends
the first with 409; a set webhook and an unknown token are refused as the Bot API does), and for Slack Socket Mode,
apps.connections.open and the WebSocket behind it in Socket Mode's published frames (hello, events_api envelopes
acknowledged by envelope_id, disconnect), re-sending an envelope that was not acknowledged on the next connection with
retry_attempt counted up, as Slack does; and for the Feishu/Lark long connection, endpoint discovery and a WebSocket
carrying protobuf Frames built with lark-oapi's own generated `Frame` class (DATA frames of type `event`, answered
with the same frame and a JSON `{"code": ...}` payload; pings answered with pongs; an event not answered with 200 is
pushed again on the next connection). It also stands in for a generic-IM receiver (Standard Webhooks, signature
checked) on /generic/replies.

`copies()` is what users would see: the posted messages, with the copies that the platform drops by idempotency key
counted once (Feishu keeps one message per `uuid`, a Standard Webhooks receiver one per `webhook-id`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from lark_oapi.ws.pb.pbbp2_pb2 import Frame
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.connectors.producers import FEISHU_APP_ID, FEISHU_APP_SECRET, SLACK_APP_TOKEN, TG_BOT_TOKEN
from tests.helpers import SECRET, free_port, wait_until


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    posted: bool = False  # a send the platform acted on: the user sees it (unless it is a dropped copy)

    def idempotency_key(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("uuid"), str):
            return f"uuid:{self.body['uuid']}"
        if "webhook-id" in self.headers:
            return f"webhook-id:{self.headers['webhook-id']}"
        return None

    def text(self) -> str:
        """The message text of a send call, whatever the platform's body shape."""
        b = self.body
        if "content" in b and isinstance(b["content"], str):  # Feishu: JSON inside JSON
            return str(json.loads(b["content"])["text"])
        if "msgParam" in b:  # DingTalk OpenAPI
            return str(json.loads(b["msgParam"])["content"])
        if isinstance(b.get("text"), dict):  # WeCom, DingTalk sessionWebhook
            return str(b["text"]["content"])
        return str(b["text"])  # Slack, Telegram


SEND_PATHS = (
    "/reply",  # Feishu reply
    "/open-apis/im/v1/messages",
    "/chat.postMessage",
    "/sendMessage",
    "/cgi-bin/message/send",
    "/v1.0/robot/oToMessages/batchSend",
    "/v1.0/robot/groupMessages/send",
    "/robot/sendBySession",
    "/generic/replies",
)
STALL_LIMIT = 60.0  # a stalled request is answered after this at the latest, so a test that forgets it cannot hang
TOKEN_PATHS = (
    "/open-apis/auth/v3/tenant_access_token/internal",
    "/cgi-bin/gettoken",
    "/v1.0/oauth2/accessToken",
)


class PlatformStandIn:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.calls: list[Call] = []
        self.scripted: dict[str, deque[tuple[int, Any, dict[str, str]]]] = {}
        self.stalls: dict[str, deque[bool]] = {}
        self._release = threading.Event()
        self.valid_tokens: set[str] = set()
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (content, content type): media to download
        self._numbers = itertools.count(1)
        self._token_numbers = itertools.count(1)
        self.frames_out: asyncio.Queue[str] | None = None
        self.acks: list[dict[str, Any]] = []
        self.stream_connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._telegram_reset()
        self._slack_reset()
        self._feishu_reset()
        self.app = self._build()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    # ------------------------------------------------------------------------------------------------ control
    def start(self) -> PlatformStandIn:
        self._thread.start()
        wait_until(lambda: self.server.started, 10, "platform stand-in")
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.should_exit = True
        self._thread.join(10)

    def reset(self) -> None:
        self.release()
        self.calls.clear()
        self.scripted.clear()
        self.stalls.clear()
        self.valid_tokens.clear()
        self.acks.clear()
        self.frames_out = None
        self._numbers = itertools.count(1)
        self._token_numbers = itertools.count(1)
        self._telegram_reset()
        self._slack_reset()
        self._feishu_reset()

    def _feishu_reset(self) -> None:
        self.feishu_secrets = {FEISHU_APP_SECRET}  # clear() to reset the secret in the console
        self.feishu_events: dict[str, bytes] = {}  # frame message_id -> event payload, until answered with 200
        self.feishu_answers: list[tuple[str, int]] = []  # (message_id, code) of every answered DATA frame
        self.on_feishu_answer: Callable[[str, int], None] | None = None
        self.feishu_connections = 0
        self.feishu_pings = 0
        self.feishu_drop_after_next_event = False  # the socket dies right after the next event: its answer is lost
        self._feishu_out: asyncio.Queue[bytes | None] | None = None
        self._feishu_numbers = itertools.count(1)

    def push_feishu_event(self, event: dict[str, Any], *, parts: int = 1) -> str:
        """Send a schema 2.0 event down the long connection (split over `parts` frames); returns the frame id."""
        frame_id = f"fs-{next(self._feishu_numbers)}"
        payload = json.dumps(event, ensure_ascii=False).encode()
        self.feishu_events[frame_id] = payload
        for frame in _feishu_frames(frame_id, payload, parts):
            self.push_feishu_frame(frame)
        return frame_id

    def push_feishu_frame(self, raw: bytes | None) -> None:
        """Raw bytes down the socket (None closes it, as a platform dropping the connection)."""
        assert self._loop is not None and self._feishu_out is not None, "no long connection yet"
        self._loop.call_soon_threadsafe(self._feishu_out.put_nowait, raw)

    def _slack_reset(self) -> None:
        self.app_tokens = {SLACK_APP_TOKEN}  # clear() to revoke
        self.envelopes: dict[str, dict[str, Any]] = {}  # handed out, not yet acknowledged
        self.envelope_acks: list[str] = []
        self.on_envelope_ack: Callable[[str], None] | None = None
        self.slack_connections = 0
        self.drop_after_next_envelope = False  # the socket dies right after the next envelope: its ack is lost
        self._slack_out: asyncio.Queue[dict[str, Any] | None] | None = None
        self._envelope_numbers = itertools.count(1)

    def push_envelope(self, payload: dict[str, Any]) -> str:
        """Hand an Events API body to the app over the open Socket Mode connection; returns the envelope_id."""
        envelope = f"env-{next(self._envelope_numbers)}"
        frame = {
            "envelope_id": envelope,
            "payload": payload,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        self.envelopes[envelope] = frame
        self.push_slack_frame(frame)
        return envelope

    def push_slack_frame(self, frame: dict[str, Any]) -> None:
        assert self._loop is not None and self._slack_out is not None, "no Socket Mode connection yet"
        self._loop.call_soon_threadsafe(self._slack_out.put_nowait, frame)

    def close_slack_socket(self) -> None:
        """The platform drops the connection without a disconnect frame."""
        assert self._loop is not None and self._slack_out is not None, "no Socket Mode connection yet"
        self._loop.call_soon_threadsafe(self._slack_out.put_nowait, None)

    def _telegram_reset(self) -> None:
        self.bot_tokens = {TG_BOT_TOKEN}  # clear() to revoke
        self.webhook_set = False
        self.updates: list[dict[str, Any]] = []  # not yet confirmed by an offset
        self.offsets: list[int | None] = []  # the offset of every getUpdates, in order
        # getUpdates calls whose offset is above this (i.e. would confirm a later update) answer 502.
        self.fail_offsets_above: int | None = None
        self.on_confirm: Callable[[int], None] | None = None  # called before updates below the offset are forgotten
        self._poll_generation = 0

    def push_update(self, update: dict[str, Any]) -> None:
        self.updates.append(update)

    def script(self, path_suffix: str, status: int, body: Any, headers: dict[str, str] | None = None, times: int = 1):
        """The next `times` requests whose path ends with `path_suffix` get this answer instead of the normal one."""
        queue = self.scripted.setdefault(path_suffix, deque())
        for _ in range(times):
            queue.append((status, body, headers or {}))

    def stall(self, path_suffix: str, *, posted: bool, times: int = 1) -> None:
        """The next `times` requests whose path ends with `path_suffix` get no answer until release() (or
        STALL_LIMIT): posted=True acts on the request first (a platform that posted and then went slow), posted=False
        never does (a platform that hangs)."""
        self._release.clear()
        queue = self.stalls.setdefault(path_suffix, deque())
        for _ in range(times):
            queue.append(posted)

    def release(self) -> None:
        """Answer every stalled request now (the clients have usually given up on them by then)."""
        self._release.set()

    def copies(self, chat: str | None = None) -> list[Call]:
        """The messages users see: posted sends, one per idempotency key where the platform honours one."""
        seen: set[str] = set()
        out = []
        for call in self.sends(chat):
            key = call.idempotency_key()
            if not call.posted or (key is not None and key in seen):
                continue
            if key is not None:
                seen.add(key)
            out.append(call)
        return out

    def revoke_tokens(self) -> None:
        self.valid_tokens.clear()

    def sends(self, chat: str | None = None) -> list[Call]:
        out = [c for c in self.calls if c.path.endswith(SEND_PATHS) and c.method == "POST"]
        if chat is not None:
            out = [c for c in out if chat in json.dumps(c.body, ensure_ascii=False) or chat in c.path]
        return out

    def edits(self) -> list[Call]:
        """Edits of posted messages: Slack chat.update, Telegram editMessageText, Feishu PUT im/v1/messages/:id."""
        return [
            c
            for c in self.calls
            if c.path.endswith(("/api/chat.update", "/editMessageText"))
            or (c.method == "PUT" and c.path.startswith("/open-apis/im/v1/messages/"))
        ]

    def token_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith(TOKEN_PATHS)]

    def push_frame(self, frame: dict[str, Any]) -> None:
        """Send a DingTalk Stream frame down the open WebSocket."""
        assert self._loop is not None and self.frames_out is not None, "no stream connection yet"
        self._loop.call_soon_threadsafe(self.frames_out.put_nowait, json.dumps(frame))

    # ------------------------------------------------------------------------------------------------ the API
    def _issue(self, prefix: str) -> str:
        token = f"{prefix}-{next(self._token_numbers)}"
        self.valid_tokens.add(token)
        return token

    def _answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if path == "/open-apis/auth/v3/tenant_access_token/internal":
            return 200, {"code": 0, "msg": "ok", "tenant_access_token": self._issue("t"), "expire": 7200}
        if path == "/open-apis/bot/v3/info":
            if bearer not in self.valid_tokens:
                return 400, {"code": 99991663, "msg": "Invalid access token for authorization"}
            return 200, {"code": 0, "msg": "ok", "bot": {"app_name": "AI助理", "open_id": "ou_bot_from_info"}}
        if path.startswith("/open-apis/im/v1/messages"):
            if bearer not in self.valid_tokens:
                return 400, {"code": 99991663, "msg": "Invalid access token for authorization"}
            return 200, {"code": 0, "msg": "success", "data": {"message_id": f"om_{next(self._numbers)}"}}
        if path == "/api/chat.postMessage":
            if not bearer.startswith("xoxb-"):
                return 200, {"ok": False, "error": "invalid_auth"}
            return 200, {"ok": True, "ts": f"{time.time():.6f}"}
        if path == "/api/chat.update":
            if not bearer.startswith("xoxb-"):
                return 200, {"ok": False, "error": "invalid_auth"}
            return 200, {"ok": True, "ts": "", "text": ""}
        if path.startswith("/bot") and path.endswith("/getMe"):
            return 200, {"ok": True, "result": {"id": 42, "is_bot": True, "username": "assistant_bot"}}
        if path.startswith("/bot") and path.endswith("/editMessageText"):
            return 200, {"ok": True, "result": {"message_id": 1}}
        if path.startswith("/bot") and path.endswith("/getFile"):
            return 200, {"ok": True, "result": {"file_id": "f", "file_path": "photos/file_0.jpg", "file_size": 1}}
        if path.startswith("/bot") and path.endswith("/sendMessage"):
            return 200, {"ok": True, "result": {"message_id": next(self._numbers)}}
        if path == "/cgi-bin/gettoken":
            return 200, {"errcode": 0, "errmsg": "ok", "access_token": self._issue("wx"), "expires_in": 7200}
        if path == "/cgi-bin/message/send":
            if query.get("access_token") not in self.valid_tokens:
                return 200, {"errcode": 42001, "errmsg": "access_token expired"}
            return 200, {"errcode": 0, "errmsg": "ok", "msgid": str(next(self._numbers))}
        if path == "/v1.0/oauth2/accessToken":
            return 200, {"accessToken": self._issue("dt"), "expireIn": 7200}
        if path == "/v1.0/robot/messageFiles/download":
            if headers.get("x-acs-dingtalk-access-token") not in self.valid_tokens:
                return 401, {"code": "InvalidAuthentication", "message": "token invalid"}
            return 200, {"downloadUrl": f"{self.base}/dingtalk-files/{next(self._numbers)}"}
        if path.startswith("/v1.0/robot/"):
            if headers.get("x-acs-dingtalk-access-token") not in self.valid_tokens:
                return 401, {"code": "InvalidAuthentication", "message": "token invalid"}
            return 200, {"processQueryKey": f"q{next(self._numbers)}"}
        if path.startswith("/robot/sendBySession"):
            return 200, {"errcode": 0, "errmsg": "ok"}
        if path == "/generic/replies":
            return 200, {"ok": True}
        if path == "/callback/ws/endpoint":
            return 200, {"code": 0, "msg": "ok"}  # answered in _feishu_endpoint (needs the body)
        if path == "/api/apps.connections.open":
            if bearer not in self.app_tokens:
                return 200, {"ok": False, "error": "invalid_auth"}
            return 200, {"ok": True, "url": f"ws://127.0.0.1:{self.port}/slack-socket?ticket={next(self._numbers)}"}
        if path == "/v1.0/gateway/connections/open":
            return 200, {"endpoint": f"ws://127.0.0.1:{self.port}/stream", "ticket": "ticket-1"}
        return 404, {"error": f"stand-in has no {method} {path}"}

    def _build(self) -> FastAPI:
        app = FastAPI()
        standin = self

        @app.websocket("/stream")
        async def stream(ws: WebSocket) -> None:
            await ws.accept()
            standin._loop = asyncio.get_running_loop()
            standin.frames_out = asyncio.Queue()
            standin.stream_connections += 1

            async def pump() -> None:
                assert standin.frames_out is not None
                while True:
                    await ws.send_text(await standin.frames_out.get())

            task = asyncio.create_task(pump())
            try:
                while True:
                    standin.acks.append(json.loads(await ws.receive_text()))
            except WebSocketDisconnect:
                pass
            finally:
                task.cancel()

        @app.websocket("/feishu-ws")
        async def feishu_ws(ws: WebSocket) -> None:
            await ws.accept()
            standin._loop = asyncio.get_running_loop()
            out: asyncio.Queue[bytes | None] = asyncio.Queue()
            standin._feishu_out = out
            standin.feishu_connections += 1
            service = int(ws.query_params["service_id"])
            for frame_id, payload in list(standin.feishu_events.items()):  # not answered with 200 yet: again
                for frame in _feishu_frames(frame_id, payload, 1):
                    out.put_nowait(frame)

            dropping = False  # set before the socket is closed: what arrives afterwards is lost

            async def pump() -> None:
                nonlocal dropping
                while True:
                    raw = await out.get()
                    drop = raw is None or standin.feishu_drop_after_next_event
                    dropping = dropping or drop
                    if raw is not None:
                        await ws.send_bytes(raw)
                    if drop:
                        standin.feishu_drop_after_next_event = False
                        await ws.close()
                        return

            task = asyncio.create_task(pump())
            try:
                while True:
                    received = await ws.receive_bytes()
                    if dropping:
                        break
                    frame = Frame()
                    frame.ParseFromString(received)
                    headers = {h.key: h.value for h in frame.headers}
                    if frame.method == 0 and headers.get("type") == "ping":
                        assert frame.service == service, "a ping for another service"
                        standin.feishu_pings += 1
                        pong = Frame(SeqID=0, LogID=0, service=service, method=0)
                        pong.headers.add(key="type", value="pong")
                        pong.payload = json.dumps({"PingInterval": 120}).encode()
                        await ws.send_bytes(pong.SerializeToString())
                    elif frame.method == 1:
                        code = int(json.loads(frame.payload)["code"])
                        frame_id = headers["message_id"]
                        if standin.on_feishu_answer is not None:
                            standin.on_feishu_answer(frame_id, code)
                        standin.feishu_answers.append((frame_id, code))
                        if code == 200:
                            standin.feishu_events.pop(frame_id, None)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                task.cancel()

        @app.websocket("/slack-socket")
        async def slack_socket(ws: WebSocket) -> None:
            await ws.accept()
            standin._loop = asyncio.get_running_loop()
            out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            standin._slack_out = out
            standin.slack_connections += 1
            for frame in list(standin.envelopes.values()):  # not acknowledged on an earlier connection: again
                frame["retry_attempt"] += 1
                frame["retry_reason"] = "timeout"
                out.put_nowait(frame)
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "applink-standin", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A0APP0001"},
                }
            )

            dropping = False  # set before the socket is closed: what arrives afterwards is lost

            async def pump() -> None:
                nonlocal dropping
                while True:
                    frame = await out.get()
                    if frame is None:
                        dropping = True
                        await ws.close()
                        return
                    drop = frame.get("type") == "events_api" and standin.drop_after_next_envelope
                    dropping = dropping or drop
                    await ws.send_json(frame)
                    if drop:
                        standin.drop_after_next_envelope = False
                        await ws.close()
                        return

            task = asyncio.create_task(pump())
            try:
                while True:
                    ack = json.loads(await ws.receive_text())
                    if dropping:
                        break
                    envelope = ack.get("envelope_id")
                    if standin.on_envelope_ack is not None:
                        standin.on_envelope_ack(envelope)
                    standin.envelope_acks.append(envelope)
                    standin.envelopes.pop(envelope, None)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                task.cancel()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])  # PUT: Feishu's message edit
        async def anything(path: str, request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            call = Call(
                request.method,
                "/" + path,
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
            standin.calls.append(call)
            is_send = call.path.endswith(SEND_PATHS) and call.method == "POST"
            if call.path == "/generic/replies":
                try:
                    Webhook(SECRET).verify(raw, call.headers, json_parse=False)
                except WebhookVerificationError:
                    return JSONResponse({"error": "bad signature"}, status_code=401)
            for suffix, stalls in standin.stalls.items():
                if call.path.endswith(suffix) and stalls:
                    call.posted = stalls.popleft() and is_send
                    deadline = time.monotonic() + STALL_LIMIT
                    while not standin._release.is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    status, answer = standin._answer(call.method, call.path, call.query, call.headers)
                    return JSONResponse(answer, status_code=status)
            for suffix, queue in standin.scripted.items():
                if call.path.endswith(suffix) and queue:
                    status, answer, headers = queue.popleft()
                    call.posted = is_send and status < 300
                    return JSONResponse(answer, status_code=status, headers=headers)
            if call.method == "GET" and call.path in standin.files:
                content, content_type = standin.files[call.path]
                return Response(content, media_type=content_type)
            if call.path == "/callback/ws/endpoint":
                return JSONResponse(standin._feishu_endpoint(call.body))
            if call.path.startswith("/bot") and call.path.endswith("/getUpdates"):
                status, answer = await standin._get_updates(call)
                return JSONResponse(answer, status_code=status)
            status, answer = standin._answer(call.method, call.path, call.query, call.headers)
            # Token-less or rejected sends answer 200 with an error code on some platforms: posted means "ok".
            call.posted = is_send and status < 300 and _accepted(answer)
            return JSONResponse(answer, status_code=status)

        return app

    def _feishu_endpoint(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        if body.get("AppID") != FEISHU_APP_ID or body.get("AppSecret") not in self.feishu_secrets:
            return {"code": 10014, "msg": "app secret invalid"}
        return {
            "code": 0,
            "msg": "ok",
            "data": {
                "URL": f"ws://127.0.0.1:{self.port}/feishu-ws?device_id=d{next(self._numbers)}&service_id=33",
                "ClientConfig": {
                    "ReconnectCount": -1,
                    "ReconnectInterval": 120,
                    "ReconnectNonce": 30,
                    "PingInterval": 1,
                },
            },
        }

    async def _get_updates(self, call: Call) -> tuple[int, Any]:
        token = call.path.removeprefix("/bot").removesuffix("/getUpdates")
        if token not in self.bot_tokens:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if self.webhook_set:
            return 409, {
                "ok": False,
                "error_code": 409,
                "description": "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            }
        body = call.body if isinstance(call.body, dict) else {}
        offset, timeout = body.get("offset"), body.get("timeout", 0)
        if self.fail_offsets_above is not None and isinstance(offset, int) and offset > self.fail_offsets_above:
            # A confirmation that never arrives (the process "died" after queueing): whatever the timing of the polls.
            return 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        self._poll_generation += 1
        mine = self._poll_generation
        self.offsets.append(offset)
        if isinstance(offset, int):
            if self.on_confirm is not None:
                self.on_confirm(offset)
            self.updates = [u for u in self.updates if u.get("update_id", offset) >= offset]
        deadline = time.monotonic() + min(float(timeout), 50.0)
        while True:
            if self._poll_generation != mine:
                return 409, {
                    "ok": False,
                    "error_code": 409,
                    "description": "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                }
            pending = self.updates if offset is None else [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return 200, {"ok": True, "result": pending[:100]}
            await asyncio.sleep(0.05)


def _feishu_frames(frame_id: str, payload: bytes, parts: int) -> list[bytes]:
    """DATA frames of type `event` as Feishu's gateway sends them (lark-oapi's Frame; split when parts > 1)."""
    size = -(-len(payload) // parts)
    frames = []
    for seq in range(parts):
        frame = Frame(SeqID=seq, LogID=0, service=33, method=1)
        for key, value in (
            ("type", "event"),
            ("message_id", frame_id),
            ("trace_id", "t"),
            ("sum", str(parts)),
            ("seq", str(seq)),
        ):
            frame.headers.add(key=key, value=value)
        frame.payload = payload[seq * size : (seq + 1) * size]
        frames.append(frame.SerializeToString())
    return frames


def _accepted(answer: Any) -> bool:
    if not isinstance(answer, dict):
        return True
    if answer.get("ok") is False:  # Slack, Telegram
        return False
    return answer.get("errcode", 0) == 0 and answer.get("code", 0) == 0  # WeCom/DingTalk webhook, Feishu
