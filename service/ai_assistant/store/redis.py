"""Redis backend: shared state for two or more instances (blue/green, two zones). Each multi-key step is one Lua
script, so it is atomic across instances. Single Redis primary (not Redis Cluster: the scripts touch several keys)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors import ConfigError
from ..messages import ChatTurn, InboundMessage
from ..settings import ASSISTANT_FILE
from ..trust import ca_context, untrusted
from .base import LANES, WORKFLOW_TRACE_RETENTION_SECONDS, Bucket, DeadLetter, Job, Lane, QueueFull, QueueStats

P = "aia:"  # key prefix
QUEUE = P + "queue"  # zset job id -> visible_at, the first job of each conversation only (_ADVANCE); the text lane
ENQUEUED = P + "enqueued"  # zset job id -> enqueued_at (for the oldest-message age), every lane
DEAD = P + "dead"  # zset job id -> dead-lettered at; the job itself is the hash aia:dead:<id>


def lane_queue(lane: str) -> str:
    """The lane's queue zset. The text lane keeps the name the one queue had, so jobs queued before lanes existed
    (no `lane` field) are text jobs where they are."""
    return QUEUE if lane == "text" else f"{QUEUE}:{lane}"


def lane_enqueued(lane: str) -> str:
    """Like ENQUEUED, for one lane (lane_stats)."""
    return f"{ENQUEUED}:{lane}"


# The same two names inside the scripts, from a job hash's `lane` field (false when absent: a text job).
_LANE_KEYS = """
local function lane_of(job) return redis.call('HGET', job, 'lane') or 'text' end
local function lane_queue(prefix, lane)
  if lane == 'text' then return prefix .. 'queue' end
  return prefix .. 'queue:' .. lane
end
local function lane_enqueued(prefix, lane) return prefix .. 'enqueued:' .. lane end
"""

# Leases and delays are measured on the Redis server's clock (TIME inside the script), never on an instance's: two
# hosts whose clocks disagree by seconds would otherwise steal each other's leases or see jobs early.
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

# Fencing: a job write runs only while the job hash still carries the writer's lease token. A finished job's hash is
# deleted and a dead-lettered one renamed, so a stale worker finds no token there either.
_HELD = "if redis.call('HGET', KEYS[1], 'lease_token') ~= ARGV[1] then return 0 end\n"

# Per-conversation order: every job id also goes on its conversation's list (aia:conv:<connector>:<chat>), whatever
# its lane, and only the list's head is in a queue zset (its lane's). Finishing or dead-lettering the head moves the
# next one into its lane's queue, with the score it was queued with (so it keeps its place among other chats), never
# earlier than now.
_ADVANCE = """
local function advance(conv, id, prefix, now)
  redis.call('LREM', conv, 1, id)
  local nxt = redis.call('LINDEX', conv, 0)
  if nxt then
    local job = prefix .. 'job:' .. nxt
    local at = tonumber(redis.call('HGET', job, 'queued_at')) or now
    redis.call('ZADD', lane_queue(prefix, lane_of(job)), 'NX', math.min(at, now), nxt)
  end
end
"""

_ENQUEUE = (
    """
-- KEYS: dedupe keys..., job key, lane queue, enqueued, conversation list, lane enqueued
-- ARGV: ttl_ms, job_id, message, enqueued_at, shed ('' for none), max_depth (0: no bound), lane
local n = #KEYS - 5
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local bound = tonumber(ARGV[6])
if bound > 0 and redis.call('ZCARD', KEYS[n + 3]) >= bound then return -1 end
"""
    + _NOW
    + """
for i = 1, n do redis.call('SET', KEYS[i], '1', 'PX', ARGV[1]) end
redis.call('HSET', KEYS[n + 1], 'message', ARGV[3], 'attempts', 0, 'claims', 0, 'parts_sent', 0,
  'enqueued_at', ARGV[4], 'queued_at', tostring(now), 'conv', KEYS[n + 4], 'lane', ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[n + 1], 'shed', ARGV[5]) end
redis.call('ZADD', KEYS[n + 3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[n + 5], ARGV[4], ARGV[2])
if redis.call('RPUSH', KEYS[n + 4], ARGV[2]) == 1 then redis.call('ZADD', KEYS[n + 2], now, ARGV[2]) end
return 1
"""
)

_CLAIM = (
    """
-- KEYS: the queues of the lanes to claim from   ARGV: lease, prefix, token
"""
    + _NOW
    + """
local id, queue, best
for i = 1, #KEYS do
  local head = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if #head > 0 and (best == nil or tonumber(head[2]) < best) then
    id, queue, best = head[1], KEYS[i], tonumber(head[2])
  end
end
if id == nil then return nil end
redis.call('ZADD', queue, now + tonumber(ARGV[1]), id)
local key = ARGV[2] .. 'job:' .. id
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HINCRBY', key, 'claims', 1)
redis.call('HSET', key, 'lease_token', ARGV[3])
return {id, redis.call('HGETALL', key)}
"""
)

_TAKE = (
    """
-- KEYS: buckets...   ARGV: per_second, burst for each bucket in turn
"""
    + _NOW
    + """
local state = {}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens = tonumber(b[1]) or burst
  tokens = math.min(burst, tokens + math.max(0, now - (tonumber(b[2]) or now)) * rate)
  if tokens < 1 then return i end
  state[i] = tokens - 1
end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(state[i]), 'at', tostring(now))
  -- Once it would be full again a bucket is the same as none: let the key go.
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - state[i]) / rate * 1000) + 1000)
end
return 0
"""
)

_EXTEND = (
    """
-- KEYS: job key   ARGV: token, job id, lease, prefix
"""
    + _HELD
    + _NOW
    + _LANE_KEYS
    + """
local queue = lane_queue(ARGV[4], lane_of(KEYS[1]))
if not redis.call('ZSCORE', queue, ARGV[2]) then return 0 end
redis.call('ZADD', queue, now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

_SAVE_ANSWER = (
    """
-- KEYS: job key, history key   ARGV: token, answer, outcome, keep, history ttl ms, turns...
"""
    + _HELD
    + """
if redis.call('HEXISTS', KEYS[1], 'answer') == 1 then return 1 end  -- a retry of a write that landed
redis.call('HSET', KEYS[1], 'answer', ARGV[2], 'outcome', ARGV[3])
for i = 6, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
if tonumber(ARGV[4]) == 0 then redis.call('DEL', KEYS[2])  -- keep none: /reset, or memory.turns 0
elseif #ARGV >= 6 then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
"""
)

_SAVE_REF = (
    """
-- KEYS: job key   ARGV: token, reply_ref
"""
    + _HELD
    + """
redis.call('HSET', KEYS[1], 'reply_ref', ARGV[2])
return 1
"""
)

_MARK_PART = (
    """
-- KEYS: job key   ARGV: token, parts_sent
"""
    + _HELD
    + """
redis.call('HSET', KEYS[1], 'parts_sent', ARGV[2])
return 1
"""
)

_COMPLETE = (
    """
-- KEYS: job key, enqueued   ARGV: token, job id, prefix
"""
    + _HELD
    + _NOW
    + _LANE_KEYS
    + _ADVANCE
    + """
local lane = lane_of(KEYS[1])
redis.call('ZREM', lane_queue(ARGV[3], lane), ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', lane_enqueued(ARGV[3], lane), ARGV[2])
local conv = redis.call('HGET', KEYS[1], 'conv')
redis.call('DEL', KEYS[1])
if conv then advance(conv, ARGV[2], ARGV[3], now) end
return 1
"""
)

_RELEASE = (
    """
-- KEYS: job key   ARGV: token, job id, delay, error, refund (0 or 1), prefix
"""
    + _HELD
    + _NOW
    + _LANE_KEYS
    + """
redis.call('ZADD', lane_queue(ARGV[6], lane_of(KEYS[1])), 'XX', now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
return 1
"""
)

_DEAD_LETTER = (
    """
-- KEYS: job key, enqueued, dead key, dead index   ARGV: token, job id, error, prefix
"""
    + _HELD
    + _NOW
    + _LANE_KEYS
    + _ADVANCE
    + """
local lane = lane_of(KEYS[1])
redis.call('ZREM', lane_queue(ARGV[4], lane), ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', lane_enqueued(ARGV[4], lane), ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'dead', 'last_error', ARGV[3], 'finished_at', now)
local conv = redis.call('HGET', KEYS[1], 'conv')
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('ZADD', KEYS[4], now, ARGV[2])
if conv then advance(conv, ARGV[2], ARGV[4], now) end
return 1
"""
)

_REPLAY = (
    """
-- KEYS: dead key, job key, enqueued, dead index   ARGV: job id, prefix
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _NOW
    + _LANE_KEYS
    + """
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HDEL', KEYS[2], 'state', 'lease_token', 'finished_at')
redis.call('HSET', KEYS[2], 'attempts', 0, 'queued_at', tostring(now))
local lane = lane_of(KEYS[2])
local enqueued_at = redis.call('HGET', KEYS[2], 'enqueued_at')
redis.call('ZADD', KEYS[3], enqueued_at, ARGV[1])
redis.call('ZADD', lane_enqueued(ARGV[2], lane), enqueued_at, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
-- Back at the end of its conversation: it waits for the messages of that chat already queued.
local conv = redis.call('HGET', KEYS[2], 'conv')
if not conv or redis.call('RPUSH', conv, ARGV[1]) == 1 then
  redis.call('ZADD', lane_queue(ARGV[2], lane), now, ARGV[1])
end
return 1
"""
)

_DROP = """
-- KEYS: dead key, dead index   ARGV: job id
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

_HOLD = """
-- KEYS: lease key   ARGV: holder, ttl_ms
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_LET_GO = """
-- KEYS: lease key   ARGV: holder
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


# Workflow checkpoints (workflows/runner.py): a hash of step -> record per job, and a set of job ids per event id for
# traces. Both outlive the job (a finished job's hash is deleted) until WORKFLOW_TRACE_RETENTION_SECONDS.
_SAVE_WORKFLOW_STEP = (
    """
-- KEYS: job key, steps key, event index   ARGV: token, step, record, retention seconds, job id
"""
    + _HELD
    + """
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])  -- a retry of a write that landed changes nothing
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
)


async def _close_later(client: aioredis.Redis, delay: float) -> None:
    await asyncio.sleep(delay)
    await client.aclose()


# --- connection setup: the one way this package opens Redis ---------------------------------------------------------

CA_KEY = "store.redis_ca_file"


def redis_client(url: str, ca_file: Path | None = None, **options: Any) -> aioredis.Redis:
    """A client for ``url``. ``rediss://`` always verifies the server's certificate chain and host name, against
    ``ca_file`` (PEM) when given, else the system trust store. A CA file with a plain ``redis://`` URL is refused:
    it would suggest an encryption that is not there."""
    scheme = urlsplit(url).scheme
    if ca_file is not None:
        if scheme != "rediss":
            raise ConfigError(ASSISTANT_FILE, CA_KEY, f"set, but store.redis_url is {scheme}://, not rediss://")
        # Loaded once here for its errors (no such file, no PEM certificate in it): one line at the start, not a
        # TLS failure at the first connection. redis-py then loads the same file itself.
        ca_context(ca_file, CA_KEY)
        options["ssl_ca_certs"] = str(ca_file)
    if scheme == "rediss":
        # Explicit, so that neither a library default nor a later change here can turn verification off.
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
    return aioredis.from_url(url, **options)


def redis_label(url: str) -> str:
    """host:port for messages: never the URL itself, which may carry the password."""
    where = urlsplit(url)
    return f"{where.scheme}://{where.hostname}:{where.port or 6379}"


def tls_problem(exc: BaseException, url: str, ca_file: Path | None) -> str | None:
    """One line when ``exc`` is a refused server certificate (a wrong CA, an expired certificate, a host name that is
    not on it): a configuration problem that retrying will not fix. None for anything else."""
    why = untrusted(exc, ca_file)
    return None if why is None else f"{redis_label(url)}: {why}; set {CA_KEY}"


async def check_tls(url: str, ca_file: Path | None, seconds: float = 10.0) -> None:
    """Connect once and raise ConfigError (one line) if the server's certificate is refused. Other failures (Redis
    restarting, a network blip) are left to the store's own retries: they heal, a wrong CA does not."""
    if urlsplit(url).scheme != "rediss":
        return
    client = redis_client(url, ca_file, socket_timeout=seconds, socket_connect_timeout=seconds)
    try:
        await cast(Any, client.ping())
    except (RedisError, OSError) as exc:
        problem = tls_problem(exc, url, ca_file)
        if problem is not None:
            raise ConfigError(ASSISTANT_FILE, "store.redis_url", problem) from None
    finally:
        await client.aclose()


class RedisStore:
    def __init__(self, url: str, ca_file: Path | None = None, history_ttl: float = 7 * 24 * 3600) -> None:
        self._url = url
        self._ca_file = ca_file
        self._history_ttl_ms = int(history_ttl * 1000)
        self._connect(url)

    def _connect(self, url: str) -> None:
        self._r = redis_client(url, self._ca_file, decode_responses=True)
        self._enqueue = self._r.register_script(_ENQUEUE)
        self._claim = self._r.register_script(_CLAIM)
        self._take = self._r.register_script(_TAKE)
        self._save = self._r.register_script(_SAVE_ANSWER)
        self._extend = self._r.register_script(_EXTEND)
        self._mark_part = self._r.register_script(_MARK_PART)
        self._save_ref = self._r.register_script(_SAVE_REF)
        self._complete = self._r.register_script(_COMPLETE)
        self._release = self._r.register_script(_RELEASE)
        self._dead_letter = self._r.register_script(_DEAD_LETTER)
        self._replay = self._r.register_script(_REPLAY)
        self._drop = self._r.register_script(_DROP)
        self._hold = self._r.register_script(_HOLD)
        self._let_go = self._r.register_script(_LET_GO)

    async def reconnect(self, url: str) -> None:
        """After a password rotation: new connections use the new URL; the old pool is closed once in-flight
        commands have had time to finish (Redis keeps already-authenticated connections while the old password is
        still accepted)."""
        if url == self._url:
            return
        probe = redis_client(url, self._ca_file)
        try:
            await cast(Any, probe.ping())  # refuse a URL that does not work before switching to it
        finally:
            await probe.aclose()
        old = self._r
        self._url = url
        self._connect(url)
        self._retired = asyncio.create_task(_close_later(old, 30.0))

    async def enqueue(
        self,
        message: InboundMessage,
        dedupe_ttl: float,
        *,
        shed: str | None = None,
        max_depth: int = 0,
        lane: Lane = "text",
    ) -> bool:
        job_id = uuid.uuid4().hex
        keys = [P + "dedupe:" + k for k in message.dedupe_keys()]
        keys += [P + "job:" + job_id, lane_queue(lane), ENQUEUED, P + "conv:" + message.conversation_key]
        keys.append(lane_enqueued(lane))
        args: list[str | float] = [
            int(dedupe_ttl * 1000),
            job_id,
            message.model_dump_json(),
            message.received_at or time.time(),
            shed or "",
            max_depth,
            lane,
        ]
        result = int(await self._enqueue(keys=keys, args=args))
        if result < 0:
            raise QueueFull(f"{max_depth} messages are queued (queue.max_depth)")
        return result == 1

    async def take(self, buckets: Sequence[Bucket]) -> str | None:
        if not buckets:
            return None
        args = [x for b in buckets for x in (b.per_second, b.burst)]
        empty = int(await self._take(keys=[P + "quota:" + b.name for b in buckets], args=args))
        return buckets[empty - 1].name if empty else None

    async def remember(self, key: str, ttl: float) -> bool:
        return bool(await self._r.set(P + "dedupe:" + key, "1", nx=True, px=int(ttl * 1000)))

    async def forget(self, key: str) -> None:
        await self._r.delete(P + "dedupe:" + key)

    async def hold(self, key: str, holder: str, ttl: float) -> bool:
        return bool(await self._hold(keys=[P + "lease:" + key], args=[holder, int(ttl * 1000)]))

    async def let_go(self, key: str, holder: str) -> None:
        await self._let_go(keys=[P + "lease:" + key], args=[holder])

    async def claim(self, lease_seconds: float, lanes: Sequence[Lane] = LANES) -> Job | None:
        queues = [lane_queue(lane) for lane in lanes]
        result = await self._claim(keys=queues, args=[lease_seconds, P, uuid.uuid4().hex])
        if not result:
            return None
        job_id, flat = result
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return Job(
            id=job_id,
            message=InboundMessage.model_validate_json(fields["message"]),
            attempts=int(fields["attempts"]),
            answer=fields.get("answer"),
            outcome=fields.get("outcome"),
            parts_sent=int(fields.get("parts_sent", 0)),
            enqueued_at=float(fields["enqueued_at"]),
            lease_token=fields["lease_token"],
            reply_ref=fields.get("reply_ref"),
            shed=fields.get("shed"),
            claims=int(fields.get("claims", 1)),
            lane=next((lane for lane in LANES if lane == fields.get("lane")), "text"),
        )

    async def extend(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        keys = [P + "job:" + job_id]
        return bool(await self._extend(keys=keys, args=[lease_token, job_id, lease_seconds, P]))

    async def save_answer(
        self,
        job_id: str,
        lease_token: str,
        answer: str,
        outcome: str,
        conversation: str,
        turns: list[ChatTurn],
        keep_turns: int,
    ) -> bool:
        encoded = [json.dumps({"role": t.role, "content": t.content}, ensure_ascii=False) for t in turns]
        return bool(
            await self._save(
                keys=[P + "job:" + job_id, P + "history:" + conversation],
                args=[lease_token, answer, outcome, max(keep_turns * 2, 0), self._history_ttl_ms, *encoded],
            )
        )

    async def mark_part_sent(self, job_id: str, lease_token: str, parts_sent: int) -> bool:
        return bool(await self._mark_part(keys=[P + "job:" + job_id], args=[lease_token, parts_sent]))

    async def save_reply_ref(self, job_id: str, lease_token: str, reply_ref: str) -> bool:
        return bool(await self._save_ref(keys=[P + "job:" + job_id], args=[lease_token, reply_ref]))

    async def complete(self, job_id: str, lease_token: str) -> bool:
        keys = [P + "job:" + job_id, ENQUEUED]
        return bool(await self._complete(keys=keys, args=[lease_token, job_id, P]))

    async def release(
        self, job_id: str, lease_token: str, delay_seconds: float, error: str, *, count_attempt: bool = True
    ) -> bool:
        keys = [P + "job:" + job_id]
        args: list[str | float] = [lease_token, job_id, delay_seconds, error[:500], 0 if count_attempt else 1, P]
        return bool(await self._release(keys=keys, args=args))

    async def dead_letter(self, job_id: str, lease_token: str, error: str) -> bool:
        keys = [P + "job:" + job_id, ENQUEUED, P + "dead:" + job_id, DEAD]
        return bool(await self._dead_letter(keys=keys, args=[lease_token, job_id, error[:500], P]))

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        ids: list[str] = await cast(Any, self._r.zrevrange(DEAD, 0, max(limit, 1) - 1))
        found = [await self.get_dead_letter(job_id) for job_id in ids[:limit]]
        return [d for d in found if d is not None]

    async def dead_letter_count(self) -> int:
        return int(await self._r.zcard(DEAD))

    async def get_dead_letter(self, job_id: str) -> DeadLetter | None:
        fields: dict[str, str] = await cast(Any, self._r.hgetall(P + "dead:" + job_id))
        if not fields:
            return None
        return DeadLetter(
            id=job_id,
            message=InboundMessage.model_validate_json(fields["message"]),
            attempts=int(fields.get("attempts", 0)),
            last_error=fields.get("last_error", ""),
            dead_at=float(fields.get("finished_at", 0)),
            answer=fields.get("answer"),
            parts_sent=int(fields.get("parts_sent", 0)),
        )

    async def replay(self, job_id: str) -> bool:
        keys = [P + "dead:" + job_id, P + "job:" + job_id, ENQUEUED, DEAD]
        return bool(await self._replay(keys=keys, args=[job_id, P]))

    async def drop(self, job_id: str) -> bool:
        return bool(await self._drop(keys=[P + "dead:" + job_id, DEAD], args=[job_id]))

    async def history(self, conversation: str, limit: int) -> list[ChatTurn]:
        if limit <= 0:
            return []
        raw = await cast(Any, self._r.lrange(P + "history:" + conversation, -limit * 2, -1))
        turns = [json.loads(x) for x in raw]
        return [ChatTurn(role=t["role"], content=t["content"]) for t in turns]

    async def stats(self) -> QueueStats:
        depth = await self._r.zcard(ENQUEUED)  # QUEUE holds only each conversation's first job
        oldest: list[Any] = await self._r.zrange(ENQUEUED, 0, 0, withscores=True)
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(depth=depth, oldest_age_seconds=age)

    async def lane_stats(self) -> dict[Lane, QueueStats]:
        now = time.time()
        pipe = self._r.pipeline(transaction=False)
        for lane in LANES:
            pipe.zcard(lane_enqueued(lane))
            pipe.zrange(lane_enqueued(lane), 0, 0, withscores=True)
        found = await pipe.execute()
        out: dict[Lane, QueueStats] = {}
        for i, lane in enumerate(LANES):
            depth, oldest = found[2 * i], found[2 * i + 1]
            out[lane] = QueueStats(int(depth), max(0.0, now - float(oldest[0][1])) if oldest else 0.0)
        return out

    async def ping(self) -> None:
        await cast(Any, self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()

    # --- Workflow checkpoints and traces (workflows/runner.py) -------------------------------------------------

    async def save_workflow_step(self, job_id: str, lease_token: str, event_id: str, step: int, record: str) -> bool:
        script = self._r.register_script(_SAVE_WORKFLOW_STEP)
        keys = [P + "job:" + job_id, P + "wf:" + job_id, P + "wfev:" + event_id]
        args: list[str | int] = [lease_token, step, record, int(WORKFLOW_TRACE_RETENTION_SECONDS), job_id]
        return bool(await script(keys=keys, args=args))

    async def workflow_steps(self, job_id: str) -> list[str]:
        fields: dict[str, str] = await cast(Any, self._r.hgetall(P + "wf:" + job_id))
        return [fields[k] for k in sorted(fields, key=int)]

    async def workflow_trace(self, event_id: str) -> list[str]:
        job_ids: set[str] = await cast(Any, self._r.smembers(P + "wfev:" + event_id))
        runs = [await self.workflow_steps(job_id) for job_id in sorted(job_ids)]
        # Several runs for one event id (two connectors' events may share it): oldest run first.
        runs.sort(key=lambda run: float(json.loads(run[0]).get("started", 0)) if run else 0.0)
        return [record for run in runs for record in run]

    # -- Answer cache (pipeline/answer_cache.py) ---------------------------------------------------------------
    # aia:cache:<connector>:<key> holds an answer with its TTL; the zset aia:cache-index:<connector> orders them by
    # when they were stored, for the size bound; the hash aia:cache-stats counts "<connector>:hits"/":misses".
    async def cache_get(self, connector: str, key: str) -> str | None:
        script = self._r.register_script(_CACHE_GET)  # by SHA: cheap, and follows the client across reconnect()
        keys = [f"{CACHE}{connector}:{key}", CACHE_INDEX + connector, CACHE_STATS]
        found = await script(keys=keys, args=[key, connector])
        return None if found is None else str(found)

    async def cache_put(self, connector: str, key: str, answer: str, ttl: float, max_entries: int) -> None:
        script = self._r.register_script(_CACHE_PUT)
        keys = [f"{CACHE}{connector}:{key}", CACHE_INDEX + connector]
        await script(keys=keys, args=[key, answer, max(1, int(ttl * 1000)), max_entries, f"{CACHE}{connector}:"])


CACHE = P + "cache:"
CACHE_INDEX = P + "cache-index:"
CACHE_STATS = P + "cache-stats"

_CACHE_GET = """
-- KEYS: entry, index, stats   ARGV: key, connector
local answer = redis.call('GET', KEYS[1])
if answer then
  redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':hits', 1)
  return answer
end
redis.call('ZREM', KEYS[2], ARGV[1])  -- expired: its index entry goes too
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':misses', 1)
return nil
"""

_CACHE_PUT = (
    """
-- KEYS: entry, index   ARGV: key, answer, ttl_ms, max_entries, entry prefix
"""
    + _NOW
    + """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]) / 1000)  -- their entries have expired
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], extra)  -- member, score, member, score, ...
  for i = 1, #popped, 2 do redis.call('DEL', ARGV[5] .. popped[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)
