"""The per-connector IP allowlist of the seed (allowed_cidrs), checked by the edge on the real client address:
the TCP peer, or the X-Forwarded-For hop just before the first trusted proxy. Refusals are 403 and queue nothing."""

from __future__ import annotations

from tests.connectors.cases import TELEGRAM
from tests.connectors.conftest import AppFactory
from tests.connectors.standin import PlatformStandIn

TELEGRAM_RANGES = ["149.154.160.0/20", "91.108.4.0/22"]


def test_allowlist_refuses_other_sources(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app({**TELEGRAM.options(platform.base), "allowed_cidrs": TELEGRAM_RANGES})
    resp = app.send(TELEGRAM.genuine(1, platform.base))  # from 127.0.0.1, no proxy trusted
    assert resp.status_code == 403
    assert resp.json()["error"] == "forbidden"
    # X-Forwarded-For from a peer that is not a trusted proxy is ignored: the peer address counts.
    spoofed = TELEGRAM.genuine(1, platform.base).with_headers(x_forwarded_for="149.154.167.220")
    assert app.send(spoofed).status_code == 403
    assert app.jobs() == []


def test_forwarded_address_counts_behind_a_trusted_proxy(make_app: AppFactory, platform: PlatformStandIn) -> None:
    app = make_app(
        {**TELEGRAM.options(platform.base), "allowed_cidrs": TELEGRAM_RANGES},
        server={"json_logs": False, "trusted_proxies": ["127.0.0.1/32"]},
    )
    inside = TELEGRAM.genuine(2, platform.base).with_headers(x_forwarded_for="149.154.167.220")
    assert app.send(inside).status_code == 200
    # The client may prepend anything; only the hop the proxy itself added is believed.
    outside = TELEGRAM.genuine(3, platform.base).with_headers(x_forwarded_for="149.154.167.220, 203.0.113.9")
    assert app.send(outside).status_code == 403
    assert [e for e, _, _ in app.jobs()] == ["10002"]
