"""The console's own SQLite file, `<data dir>/console.sqlite3`: accounts, sessions, sign-in failures, the audit log and
the key that signs CSRF tokens. Kept apart from the StateStore (queue, memory) on purpose: accounts and audit are
local to one console and must not travel through Redis (docs/console.md)."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
FILE = "console.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, before TEXT, after TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return {"id": self.id, "at": when, "actor": self.actor, "action": self.action, "target": self.target,
                "before": self.before, "after": self.after}  # fmt: skip


class LoginRefused(Exception):
    """Wrong name or password, or a locked account; `locked` says which, so the page can tell the user to wait."""

    def __init__(self, locked: bool) -> None:
        super().__init__("locked" if locked else "bad credentials")
        self.locked = locked


def _digest(token: str) -> str:
    # Only the hash of a session token is kept: a copy of the database does not sign anyone in.
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._hasher = PasswordHasher()
        # One connection shared by the event loop and worker threads (argon2 runs in a thread); the lock serialises.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        path.chmod(0o600)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ConsoleStore:
        return cls(data_dir / FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- signing key ------------------------------------------------------------------------------------------------
    def signing_key(self) -> str:
        """Per-install key for CSRF tokens, created on first use and kept across restarts."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('signing_key', ?)", (secrets.token_urlsafe(32),)
            )
            return str(self._db.execute("SELECT value FROM meta WHERE key = 'signing_key'").fetchone()[0])

    # -- accounts ---------------------------------------------------------------------------------------------------
    def set_user(self, name: str, role: Role, password: str) -> bool:
        """Create the account or replace its role and password; True when it already existed."""
        existed = bool(self._rows("SELECT 1 FROM users WHERE name = ?", name))
        digest = self._hasher.hash(password)
        self._run(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO "
            "UPDATE SET role = excluded.role, password_hash = excluded.password_hash, failures = 0, locked_until = 0",
            name,
            role,
            digest,
            time.time(),
        )
        if existed:  # a new password ends the sessions signed in with the old one
            self._run("DELETE FROM sessions WHERE user = ?", name)
        return existed

    def users(self) -> list[User]:
        return [User(n, r) for n, r in self._rows("SELECT name, role FROM users ORDER BY name")]

    def authenticate(self, name: str, password: str, max_failures: int, lockout_seconds: int) -> User:
        """Blocking (argon2 is deliberately slow): call from a worker thread."""
        now = time.time()
        rows = self._rows("SELECT role, password_hash, locked_until FROM users WHERE name = ?", name)
        if not rows:
            # Hash anyway so an unknown name takes as long as a known one (no account enumeration by timing).
            self._hasher.hash(password)
            raise LoginRefused(locked=False)
        role, digest, locked_until = rows[0]
        if locked_until > now:
            raise LoginRefused(locked=True)
        try:
            self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            with self._lock:
                self._db.execute("UPDATE users SET failures = failures + 1 WHERE name = ?", (name,))
                (failures,) = self._db.execute("SELECT failures FROM users WHERE name = ?", (name,)).fetchone()
                if failures >= max_failures:
                    self._db.execute(
                        "UPDATE users SET locked_until = ?, failures = 0 WHERE name = ?", (now + lockout_seconds, name)
                    )
            raise LoginRefused(locked=failures >= max_failures) from None
        self._run("UPDATE users SET failures = 0, locked_until = 0 WHERE name = ?", name)
        if self._hasher.check_needs_rehash(digest):
            self._run("UPDATE users SET password_hash = ? WHERE name = ?", self._hasher.hash(password), name)
        return User(name, role)

    # -- sessions ---------------------------------------------------------------------------------------------------
    def new_session(self, user: User, idle_timeout: float) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        # Sessions abandoned without signing out would otherwise stay forever: drop every idle one at each sign-in.
        self._run("DELETE FROM sessions WHERE last_seen < ?", now - idle_timeout)
        self._run("INSERT INTO sessions VALUES (?, ?, ?, ?)", _digest(token), user.name, now, now)
        return token

    def session_user(self, token: str, idle_timeout: float) -> User | None:
        """The session's user, touching it; None (and the session removed) when unknown or idle too long."""
        now = time.time()
        key = _digest(token)
        rows = self._rows(
            "SELECT u.name, u.role, s.last_seen FROM sessions s JOIN users u ON u.name = s.user WHERE s.token_hash = ?",
            key,
        )
        if not rows:
            return None
        name, role, last_seen = rows[0]
        if now - last_seen > idle_timeout:
            self._run("DELETE FROM sessions WHERE token_hash = ?", key)
            return None
        self._run("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", now, key)
        return User(name, role)

    def end_session(self, token: str) -> None:
        self._run("DELETE FROM sessions WHERE token_hash = ?", _digest(token))

    # -- audit ------------------------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str, before: Any = None, after: Any = None) -> None:
        """Callers pass values with secrets already redacted (see connectors_file.redact)."""
        self._run(
            "INSERT INTO audit (at, actor, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?)",
            time.time(),
            actor,
            action,
            target,
            None if before is None else json.dumps(before, ensure_ascii=False, sort_keys=True),
            None if after is None else json.dumps(after, ensure_ascii=False, sort_keys=True),
        )

    def audit_entries(self, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT id, at, actor, action, target, before, after FROM audit ORDER BY id DESC"
        rows = self._rows(sql + " LIMIT ?", limit) if limit else self._rows(sql)
        return [
            AuditEntry(i, at, actor, action, target, json.loads(b) if b else None, json.loads(a) if a else None)
            for i, at, actor, action, target, b, a in rows
        ]
