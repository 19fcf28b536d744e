"""Bearer tokens that clients present (the admin API, Alertmanager), rotatable without a failed request: during a
rotation both the new and the previous token are accepted, and `ai-assistant rotate-secrets --finish` drops the old one.
The service re-reads them on SIGHUP (see `reload`)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr


def _value(secret: SecretStr | str | None) -> bytes | None:
    if secret is None:
        return None
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    raw = raw.strip()
    return raw.encode() if raw else None


class BearerTokens:
    def __init__(self, current: SecretStr | str | None, previous: SecretStr | str | None = None) -> None:
        self.update(current, previous)

    def update(self, current: SecretStr | str | None, previous: SecretStr | str | None = None) -> None:
        self._accepted = [v for v in (_value(current), _value(previous)) if v is not None]

    @property
    def configured(self) -> bool:
        return bool(self._accepted)

    def check(self, authorization: str | None) -> bool:
        """Whether `Authorization: Bearer <token>` carries an accepted token (constant-time for each candidate)."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        supplied = authorization.removeprefix("Bearer ").strip().encode()
        matches = [hmac.compare_digest(supplied, accepted) for accepted in self._accepted]
        return any(matches)
