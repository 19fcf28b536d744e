"""One root exception with specific subclasses; HTTP status codes are chosen only at the HTTP edge."""

from __future__ import annotations


class AssistantError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AssistantError):
    """Configuration that cannot be used. The message names the file and the key, on one line."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class RejectedRequest(AssistantError):
    """An inbound request that must not be processed. `reason` is a bounded metric label."""

    status_code = 400
    reason = "malformed"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class MalformedRequest(RejectedRequest):
    status_code = 400
    reason = "malformed"


class SignatureInvalid(RejectedRequest):
    """Bad or missing signature/token: the caller is not who it claims to be."""

    status_code = 401
    reason = "signature"


class StaleRequest(RejectedRequest):
    """Correctly signed but outside the replay window."""

    status_code = 401
    reason = "stale"


class Forbidden(RejectedRequest):
    """Authenticated but not allowed here (source address, foreign bot id, ...)."""

    status_code = 403
    reason = "forbidden"


class PayloadTooLarge(RejectedRequest):
    status_code = 413
    reason = "too_large"


class EngineUnavailable(AssistantError):
    """The inference engine could not produce an answer after bounded retries.

    `transient`: the server may well answer later (down, overloaded, timed out), so the message is worth keeping
    until its deadline; False for a request it will refuse again. `retry_after`: what the server asked for, if anything.
    """

    def __init__(self, detail: str, *, transient: bool = True, retry_after: float | None = None) -> None:
        self.transient, self.retry_after = transient, retry_after
        super().__init__(detail)


class DeliveryFailed(AssistantError):
    """An outbound send to the platform failed and was not posted (or the platform de-duplicates a re-send on our
    idempotency key); the job is retried later, no sooner than `retry_after` seconds when the platform said so."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class DeliveryUncertain(DeliveryFailed):
    """The send may have been posted: the request went out and no answer came back (read timeout, connection lost,
    a gateway's 504), and the platform has no idempotency key that would drop a second copy. Re-sending could show
    the user the same part twice, so this part must not be re-sent: record it as sent (unconfirmed) and go on.
    A subclass of DeliveryFailed so that code unaware of it still treats it as a failure (docs/connectors.md)."""
