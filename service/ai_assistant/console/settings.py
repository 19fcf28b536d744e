"""The `console:` section of `assistant.yaml` (env `AI_ASSISTANT_CONSOLE__...`): the admin console at /admin."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # A signed-in session that sees no request for this long is over; the next request goes to the sign-in page.
    idle_timeout_seconds: int = Field(1800, ge=1)
    # Wrong passwords in a row before the account is locked, and for how long.
    max_failed_logins: int = Field(5, ge=1)
    lockout_seconds: int = Field(900, ge=1)
    # Sign-in attempts per client address per minute, whatever the account (guessing across many names).
    login_attempts_per_minute: int = Field(20, ge=1)
