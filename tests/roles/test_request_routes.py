"""Issue 25, item 3: nginx routes the webhooks and the admin console to the service separately, each with its own
limits and timeouts (the seed's "load balancing by request type"). Rendered through Ansible's own templating."""

from __future__ import annotations

import re

from tests.roles.test_static import render

BASE = {"reverse_proxy_server_names": ["a.example.com"], "reverse_proxy_admin_allow": ["192.0.2.0/28"]}


def location(conf: str, opening: str) -> str:
    """The body of the location block that starts with `opening` (location blocks here hold one nested block at
    most: limit_except, closed on its own line)."""
    body = conf.split(opening + " {", 1)[1]
    lines = []
    for line in body.splitlines()[1:]:
        if line.strip() == "}":
            break
        lines.append(line.strip())
    return "\n".join(lines)


def test_webhooks_and_the_console_each_get_their_own_limits_and_timeouts() -> None:
    conf = render("reverse_proxy", "nginx.conf.j2", BASE)
    webhook = location(conf, "location /api/im/")
    admin = location(conf, "location /admin/")
    assert "limit_req zone=webhooks burst=40 nodelay;" in webhook
    assert "client_max_body_size 1m;" in webhook
    assert "proxy_read_timeout 10s;" in webhook and "proxy_connect_timeout 5s;" in webhook
    assert "limit_req zone=admin burst=10 nodelay;" in admin
    assert "client_max_body_size 20m;" in admin
    assert "proxy_read_timeout 300s;" in admin and "proxy_send_timeout 300s;" in admin
    assert "allow 192.0.2.0/28;" in admin and "deny all;" in admin
    # Everything else keeps the server-wide default.
    server = conf.split("server_name a.example.com;", 1)[1].split("location", 1)[0]
    assert "proxy_read_timeout 30s;" in server


def test_the_route_timeouts_follow_their_variables() -> None:
    conf = render(
        "reverse_proxy",
        "nginx.conf.j2",
        {**BASE, "reverse_proxy_webhook_read_timeout": 4, "reverse_proxy_admin_read_timeout": 900,
         "reverse_proxy_webhook_paths": ["/api/im/", "/api/feishu/"]},
    )  # fmt: skip
    for path in ("/api/im/", "/api/feishu/"):
        assert "proxy_read_timeout 4s;" in location(conf, f"location {path}"), path
    assert "proxy_read_timeout 900s;" in location(conf, "location /admin/")


def test_every_route_still_proxies_the_way_the_blue_green_switch_rewrites() -> None:
    """roles/reverse_proxy/tasks/upstream.yml rewrites each `proxy_pass http://127.0.0.1:<port>;` line at a colour
    switch: the separate routes must keep that form, with no upstream block the switch would miss."""
    conf = render("reverse_proxy", "nginx.conf.j2", {**BASE, "reverse_proxy_upstream": "http://127.0.0.1:8081"})
    passes = re.findall(r"proxy_pass (\S+);", conf)
    assert passes and set(passes) == {"http://127.0.0.1:8081"}, passes
    assert "upstream " not in conf
