"""Durable state behind one small protocol: de-duplication, the message queue, conversation memory."""

from __future__ import annotations

from ..settings import Settings
from .base import Bucket, DeadLetter, Job, QueueFull, QueueStats, StateStore


def open_store(settings: Settings) -> StateStore:
    if settings.store.backend == "redis":
        from .redis import RedisStore

        if settings.store.redis_url is None:
            from ..errors import ConfigError

            raise ConfigError("assistant.yaml", "store.redis_url", "required when store.backend is redis")
        ca_file = settings.store.redis_ca_file
        return RedisStore(
            settings.store.redis_url.get_secret_value(),
            settings.resolve(ca_file) if ca_file is not None else None,
            history_ttl=settings.store.history_ttl_seconds,
        )
    from .sqlite import SQLiteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        settings.data_dir / "state.sqlite3",
        synchronous=settings.store.sqlite_synchronous,
        history_ttl=settings.store.history_ttl_seconds,
    )


__all__ = ["Bucket", "DeadLetter", "Job", "QueueFull", "QueueStats", "StateStore", "open_store"]
