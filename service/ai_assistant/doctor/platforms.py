"""Each connector's platform: reachable and taking the credentials, through one call that sends nothing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..connectors.base import Connector
from ..errors import DeliveryFailed
from .clock import Clocks
from .report import Check, Status, one_line


def _probe_copy(connector: Connector) -> Connector:
    """A twin of the connector that tries each call once: the doctor reports the platform's first answer, and a
    running service's connector keeps its cached token and rate limits untouched."""
    config = connector.config
    if "max_attempts" in type(config).model_fields:
        config = config.model_copy(update={"max_attempts": 1})
    return type(connector)(connector.name, config)


async def _token(connector: Any) -> str:
    _, lifetime = await connector._fetch_token()
    return f"credentials accepted: access token issued for {float(lifetime) / 3600:.1f} h"


async def _slack(connector: Any) -> str:
    from ..connectors.slack import _check

    body = await connector.api.call(
        "POST",
        f"{connector.api_base}/auth.test",
        endpoint="auth.test",
        headers={"Authorization": f"Bearer {connector.config.bot_token.get_secret_value()}"},
        check=_check,
        limited=False,
    )
    return f"credentials accepted: auth.test knows the bot as {body.get('user')} in {body.get('team')}"


async def _telegram(connector: Any) -> str:
    from ..connectors.telegram import _check

    body = await connector.api.call(
        "POST", f"{connector._bot_url}/getMe", endpoint="getMe", check=_check, limited=False
    )
    return f"credentials accepted: getMe knows the bot as @{body.get('result', {}).get('username')}"


async def _generic_im(connector: Any) -> str:
    resp = await connector.http.get(connector.config.reply_url)
    if resp.status_code in (502, 503, 504):  # a proxy in front of a receiver that is down; 501 etc. still answer
        raise DeliveryFailed(f"{connector.name}: reply_url answered HTTP {resp.status_code}")
    # Replies are signed here and verified by the receiver: there is no credential the receiver can confirm unasked.
    return f"reply_url answers (HTTP {resp.status_code}); no credential to test (replies are signed here)"


_PROBES: dict[str, Callable[[Any], Awaitable[str]]] = {
    "feishu": _token,
    "lark": _token,
    "dingtalk": _token,
    "wecom": _token,
    "slack": _slack,
    "telegram": _telegram,
    "generic_im": _generic_im,
}


async def connector_check(connector: Connector, clocks: Clocks) -> Check:
    name = f"connector {connector.name}"
    probe_fn = _PROBES.get(connector.platform)
    if probe_fn is None:
        return Check(name, Status.SKIP, f"platform {connector.platform} has no credential probe")
    source = f"connector {connector.name}"
    probe = _probe_copy(connector)
    probe._http = clocks.client(source)  # the connector's own calls, with our Date-header hook on its client
    started = time.perf_counter()
    try:
        summary = await probe_fn(probe)
    except Exception as exc:  # DeliveryFailed carries the platform's own answer; anything else is reported as is
        text = one_line(exc)
        if source in clocks.answered:
            advice = "the platform refused the credentials: compare them in connectors.yaml with its console"
            return Check(name, Status.FAIL, f"{connector.platform} refused: {text}", advice, "connectors")
        advice = "check the network path (ACL, proxy, DNS) to the platform, and api_base if set"
        return Check(name, Status.FAIL, f"{connector.platform} unreachable: {text}", advice, "connectors")
    finally:
        await probe.aclose()
    ms = (time.perf_counter() - started) * 1000
    return Check(name, Status.PASS, f"{connector.platform}: {summary} ({ms:.0f} ms)", details={"latency_ms": round(ms)})
