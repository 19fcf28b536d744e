"""Redis backend: shared state for two or more instances (blue/green, two zones). Each multi-key step is one Lua
script, so it is atomic across instances. Single Redis primary (not Redis Cluster: the scripts touch several keys)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, cast

import redis.asyncio as aioredis

from ..messages import ChatTurn, InboundMessage
from .base import Job, QueueStats

P = "aia:"  # key prefix
QUEUE = P + "queue"  # zset job id -> visible_at
ENQUEUED = P + "enqueued"  # zset job id -> enqueued_at (for the oldest-message age)

_ENQUEUE = """
-- KEYS: dedupe keys..., job key, queue, enqueued   ARGV: ttl_ms, job_id, message, now, enqueued_at
local n = #KEYS - 3
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, n do redis.call('SET', KEYS[i], '1', 'PX', ARGV[1]) end
redis.call('HSET', KEYS[n + 1], 'message', ARGV[3], 'attempts', 0, 'parts_sent', 0, 'enqueued_at', ARGV[5])
redis.call('ZADD', KEYS[n + 2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[n + 3], ARGV[5], ARGV[2])
return 1
"""

_CLAIM = """
-- KEYS: queue   ARGV: now, lease, prefix, token
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return nil end
local id = ids[1]
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
local key = ARGV[3] .. 'job:' .. id
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'lease_token', ARGV[4])
return {id, redis.call('HGETALL', key)}
"""

_EXTEND = """
-- KEYS: queue, job key   ARGV: job id, token, visible_at
if redis.call('HGET', KEYS[2], 'lease_token') ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

_SAVE_ANSWER = """
-- KEYS: job key, history key   ARGV: answer, outcome, keep, turns...
redis.call('HSET', KEYS[1], 'answer', ARGV[1], 'outcome', ARGV[2])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
return 1
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


async def _close_later(client: aioredis.Redis, delay: float) -> None:
    await asyncio.sleep(delay)
    await client.aclose()


class RedisStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._connect(url)

    def _connect(self, url: str) -> None:
        self._r = aioredis.from_url(url, decode_responses=True)
        self._enqueue = self._r.register_script(_ENQUEUE)
        self._claim = self._r.register_script(_CLAIM)
        self._save = self._r.register_script(_SAVE_ANSWER)
        self._extend = self._r.register_script(_EXTEND)
        self._hold = self._r.register_script(_HOLD)
        self._let_go = self._r.register_script(_LET_GO)

    async def reconnect(self, url: str) -> None:
        """After a password rotation: new connections use the new URL; the old pool is closed once in-flight
        commands have had time to finish (Redis keeps already-authenticated connections while the old password is
        still accepted)."""
        if url == self._url:
            return
        await aioredis.from_url(url).ping()  # refuse a URL that does not work before switching to it
        old = self._r
        self._url = url
        self._connect(url)
        self._retired = asyncio.create_task(_close_later(old, 30.0))

    async def enqueue(self, message: InboundMessage, dedupe_ttl: float) -> bool:
        job_id = uuid.uuid4().hex
        now = time.time()
        keys = [P + "dedupe:" + k for k in message.dedupe_keys()] + [P + "job:" + job_id, QUEUE, ENQUEUED]
        args: list[str | float] = [
            int(dedupe_ttl * 1000),
            job_id,
            message.model_dump_json(),
            now,
            message.received_at or now,
        ]
        return bool(await self._enqueue(keys=keys, args=args))

    async def remember(self, key: str, ttl: float) -> bool:
        return bool(await self._r.set(P + "dedupe:" + key, "1", nx=True, px=int(ttl * 1000)))

    async def forget(self, key: str) -> None:
        await self._r.delete(P + "dedupe:" + key)

    async def hold(self, key: str, holder: str, ttl: float) -> bool:
        return bool(await self._hold(keys=[P + "lease:" + key], args=[holder, int(ttl * 1000)]))

    async def let_go(self, key: str, holder: str) -> None:
        await self._let_go(keys=[P + "lease:" + key], args=[holder])

    async def claim(self, lease_seconds: float) -> Job | None:
        result = await self._claim(keys=[QUEUE], args=[time.time(), lease_seconds, P, uuid.uuid4().hex])
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
        )

    async def extend(self, job_id: str, lease_token: str, lease_seconds: float) -> bool:
        keys = [QUEUE, P + "job:" + job_id]
        return bool(await self._extend(keys=keys, args=[job_id, lease_token, time.time() + lease_seconds]))

    async def save_answer(
        self, job_id: str, answer: str, outcome: str, conversation: str, turns: list[ChatTurn], keep_turns: int
    ) -> None:
        encoded = [json.dumps({"role": t.role, "content": t.content}, ensure_ascii=False) for t in turns]
        await self._save(
            keys=[P + "job:" + job_id, P + "history:" + conversation],
            args=[answer, outcome, max(keep_turns * 2, 1), *encoded],
        )

    async def mark_part_sent(self, job_id: str, parts_sent: int) -> None:
        await cast(Any, self._r.hset(P + "job:" + job_id, "parts_sent", parts_sent))

    async def complete(self, job_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(QUEUE, job_id)
            pipe.zrem(ENQUEUED, job_id)
            pipe.delete(P + "job:" + job_id)
            await pipe.execute()

    async def release(self, job_id: str, delay_seconds: float, error: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zadd(QUEUE, {job_id: time.time() + delay_seconds}, xx=True)
            pipe.hset(P + "job:" + job_id, "last_error", error[:500])
            await pipe.execute()

    async def dead_letter(self, job_id: str, error: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.zrem(QUEUE, job_id)
            pipe.zrem(ENQUEUED, job_id)
            pipe.hset(P + "job:" + job_id, mapping={"state": "dead", "last_error": error[:500]})
            pipe.rename(P + "job:" + job_id, P + "dead:" + job_id)
            await pipe.execute()

    async def history(self, conversation: str, limit: int) -> list[ChatTurn]:
        if limit <= 0:
            return []
        raw = await cast(Any, self._r.lrange(P + "history:" + conversation, -limit * 2, -1))
        turns = [json.loads(x) for x in raw]
        return [ChatTurn(role=t["role"], content=t["content"]) for t in turns]

    async def stats(self) -> QueueStats:
        depth = await self._r.zcard(QUEUE)
        oldest: list[Any] = await self._r.zrange(ENQUEUED, 0, 0, withscores=True)
        age = max(0.0, time.time() - float(oldest[0][1])) if oldest else 0.0
        return QueueStats(depth=depth, oldest_age_seconds=age)

    async def ping(self) -> None:
        await cast(Any, self._r.ping())

    async def close(self) -> None:
        await self._r.aclose()
