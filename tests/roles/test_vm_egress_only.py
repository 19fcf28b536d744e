"""The egress-only variant on the one converged VM (issue 26): the firewall and the assistant re-run with
`firewall_ingress: none` and a Telegram connector in long-polling mode as the only connector; 443 is then dropped from
the runner by the real nftables ruleset, and a message that arrives over getUpdates is answered by the VM's local model
exactly once. The module puts the VM back (the inventory's own connectors and firewall) for the modules after it.

The same re-run turns the egress allowlist on (`firewall_egress_policy: drop`, issue 23, CIS 4.3.7): the only
destinations allowed out are the Bot API stand-in and a test server on the runner, so the message's whole path (long
polling, the answer, Redis and the local model on loopback) runs under the drop policy, and a port outside the list is
refused and logged. One switch and one restore carry both scenarios (each firewall run costs minutes under emulation).

And a third, issue 23 item 4: the answer crosses the GPU layout's TLS link. Before the switch, site.yml's inference play
(its `link_tls` tag: the tls role's internal_ca certificate for the private address, then link_tls) runs with the VM
added to the `inference` group, in front of the VM's llama.cpp instead of TGI (both speak the same API on loopback
port 8089); the switched assistant calls https://<private address>:8089/v1 and verifies the certificate against the
hand-off's internal CA (`engine.ca_file`), as an assistant host calls a GPU host. The restore puts the inventory's own
engine back (llama.cpp on loopback) and runs the link play again without the `inference` group: the model link goes,
the link instance stays for the log host's journal link (the VM is its own log host, test_vm_hardening.py).

The same link play runs with Weaviate switched on (`ai_assistant_weaviate_enabled`, which the inventory leaves off: no
Weaviate image can be had here), so site.yml's data play also puts Weaviate's REST and gRPC links on the private
address, as on a data host; a stand-in of Weaviate's surface listens where Weaviate would, and the assistant's own
knowledge store code, from the deployed venv, crosses both links, verifying them against the internal CA.

Stand-ins, because the Bot API cannot be reached here and no Weaviate can run: tests/connectors/standin.py's Telegram
server (getUpdates, sendMessage) on the runner's loopback, which the guest reaches as 10.0.2.2 through slirp, and
tests/knowledge/weaviate_standin.py in the guest. Everything else is real: the roles, nftables, systemd, the assistant,
Redis and llama.cpp in the VM.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest

from tests.connectors import producers as p
from tests.connectors.standin import PlatformStandIn
from tests.helpers import wait_until
from tests.roles.conftest import DOMAIN, REPO, TIMINGS, VM_ANSWER_MODE, TestVM
from tests.roles.test_vm import probe

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800, func_only=True)]

SITE = REPO / "playbooks/site.yml"
TAGS = "firewall,assistant"
CHAT = "777"  # telegram_update's private chat
# Unique per run and above any earlier run's, as update id and message id: a VM kept with VM_KEEP remembers what it
# answered (de-duplication keys by update id and by chat and message id, the connector's offset) and would
# acknowledge a repeated one without answering it.
UPDATE_ID = int(time.time())  # Bot API update ids are 32-bit: this fits until 2038


def _stream_state(test_vm: TestVM) -> str:
    """The connector's /readyz check, read through nginx inside the VM (whichever slot serves)."""
    done = test_vm.ssh(f"curl -sSk --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/readyz", timeout=60)
    try:
        checks: dict[str, Any] = json.loads(done.stdout).get("checks", {})
    except json.JSONDecodeError:
        return f"no JSON: {done.stdout[:200]} {done.stderr[:200]}"
    return str(checks.get("stream:tg"))


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"egress-ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def runner_http() -> Iterator[int]:
    """An HTTP server on the runner's loopback: the guest reaches it as 10.0.2.2 through slirp."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def egress_only(
    test_vm: TestVM, runner_http: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformStandIn]:
    """The switched VM, with the Telegram stand-in it polls; restored to the inventory's own state afterwards."""
    platform = PlatformStandIn().start()
    work = tmp_path_factory.mktemp("egress-only")
    extra = work / "egress-only.json"
    # The VM as a GPU host as well, for the inference play's link (the inventory's other groups stay as they are).
    as_gpu_host = work / "inference-group.yml"
    as_gpu_host.write_text(json.dumps({"all": {"children": {"inference": {"hosts": {"testvm": None}}}}}))
    extra.write_text(
        json.dumps(
            {
                "firewall_ingress": "none",
                # The roles refuse these with `none`; the inventory's load balancer is the runner.
                "firewall_lb_cidrs": [],
                "firewall_im_allowlist_cidrs": [],
                "firewall_acme_cidrs": [],
                "assistant_connectors": {
                    "tg": {
                        "platform": "telegram",
                        "mode": "stream",
                        "api_base": f"http://10.0.2.2:{platform.port}",
                        "bot_username": "assistant_bot",
                        "poll_timeout_seconds": 5,
                        "answer_mode": VM_ANSWER_MODE,
                    }
                },
                "assistant_connector_secrets": {"tg": {"bot_token": p.TG_BOT_TOKEN}},
                "assistant_alerts_connector": "tg",
                "assistant_alerts_chat_id": "-1001",
                # The model over the TLS link (see the module's docstring), verified against the internal CA.
                "assistant_engine_base_url": "https://{{ ansible_facts['default_ipv4']['address'] }}:8089/v1",
                "assistant_engine_ca_cert": "{{ ai_assistant_internal_ca_cert }}",
                "firewall_egress_policy": "drop",
                # The Bot API stand-in and the runner's test server: 10.0.2.2 on any other port and every other
                # address are refused.
                "firewall_egress_allow": [
                    {"cidrs": ["10.0.2.2"], "ports": [platform.port], "comment": "Bot API stand-in"},
                    {"cidrs": ["10.0.2.2"], "ports": [runner_http], "comment": "runner"},
                ],
            }
        )
    )
    stack_ca = test_vm.workdir / "handoff" / "internal-ca" / "ca.crt"  # the hand-off's copy of the stack's root
    ca_before = stack_ca.read_bytes()
    try:
        start = time.monotonic()
        linked = test_vm.play(
            SITE,
            "--tags",
            "link_tls",
            "-i",
            str(as_gpu_host),
            "-e",
            "ai_assistant_weaviate_enabled=true",
            name="link-tls",
        )
        TIMINGS["link-tls play"] = time.monotonic() - start
        assert linked.rc == 0 and linked.failed == 0, f"the link play failed (log {linked.log}):\n{linked.tail()}"
        # The tls role signed with the stack's CA as it is: replacing it would break every chain that names it.
        assert stack_ca.read_bytes() == ca_before, "the tls role rewrote the hand-off's CA certificate"
        start = time.monotonic()
        switched = test_vm.play(SITE, "--tags", TAGS, "-e", f"@{extra}", name="egress-only")
        TIMINGS["egress-only switch"] = time.monotonic() - start
        assert switched.rc == 0 and switched.failed == 0, (
            f"egress-only run failed (log {switched.log}):\n{switched.tail()}"
        )
        start = time.monotonic()
        again = test_vm.play(SITE, "--tags", TAGS, "-e", f"@{extra}", name="egress-only-again")
        TIMINGS["egress-only again"] = time.monotonic() - start
        assert again.rc == 0 and again.changed == 0, f"not idempotent: {again.changed_tasks()} (log {again.log})"
        yield platform
    finally:
        start = time.monotonic()
        back = test_vm.play(SITE, "--tags", TAGS, name="egress-only-restore")
        TIMINGS["egress-only restore"] = time.monotonic() - start
        platform.stop()
        # The link instance stays: it also carries the log host's journal link (the VM is its own log host). Without
        # the inference group its model link goes, and the private address's 8089 with it; Weaviate's with the switch.
        start = time.monotonic()
        unlinked = test_vm.play(SITE, "--tags", "link_tls", name="link-tls-restore")
        TIMINGS["link-tls restore"] = time.monotonic() - start
        assert back.rc == 0 and back.failed == 0, f"restoring the VM failed (log {back.log}):\n{back.tail()}"
        assert unlinked.rc == 0 and unlinked.failed == 0, f"the link restore failed (log {unlinked.log})"
        address = test_vm.private_address()
        wait_until(
            lambda: f"{address}:8089" not in test_vm.ssh("ss -Hltn 'sport = :8089'").stdout,
            60,
            "the model link to close after the restore (nginx reload)",
            2,
        )
        assert probe(test_vm.vm.ports["https"]) in ("answered", "closed"), "443 is not back for the next modules"
        assert "policy accept;" in test_vm.ssh("nft list chain inet filter output").stdout, "egress still dropped"


def test_egress_only_ruleset_has_no_web_port_for_the_runner(test_vm: TestVM, egress_only: PlatformStandIn) -> None:
    ruleset = test_vm.ssh("nft list ruleset").stdout
    assert "hook input priority filter; policy drop;" in ruleset
    assert "@lb4" not in ruleset and "tcp dport 80 " not in ruleset
    # At most Alertmanager's private path from the monitoring host may stay on 443 (firewall_extra_rules); in the
    # first VM run (2026-12-05) the ruleset had no 443 rule at all.
    https_rules = [line.strip() for line in ruleset.splitlines() if "dport 443" in line]
    assert all("192.0.2.99" in r or "2001:db8::99" in r for r in https_rules), https_rules
    assert "10.0.2.2" not in "\n".join(https_rules)
    assert "tcp dport 22 ip saddr @admin4" in ruleset  # administrators still get in


def test_443_is_dropped_from_the_runner_while_nginx_still_listens(
    test_vm: TestVM, egress_only: PlatformStandIn
) -> None:
    listening = test_vm.ssh("ss -Hltn 'sport = :443'").stdout
    assert ":443" in listening, "nginx no longer listens: the drop below would prove nothing about the firewall"
    assert probe(test_vm.vm.ports["https"]) == "silent"


def test_a_message_over_long_polling_is_answered_once_by_the_local_model(
    test_vm: TestVM, egress_only: PlatformStandIn
) -> None:
    platform = egress_only
    wait_until(lambda: platform.offsets, 300, "the VM's first getUpdates", interval=1)
    wait_until(lambda: _stream_state(test_vm) == "ok", 120, "/readyz's stream:tg check to be ok", interval=2)
    start = time.monotonic()
    platform.push_update(p.telegram_update(UPDATE_ID, "Say hello.", message_id=UPDATE_ID))
    sends = wait_until(lambda: platform.sends(CHAT), 900, "the answer's sendMessage", interval=1)
    TIMINGS["egress-only answer"] = time.monotonic() - start
    # Confirmed (an offset past the update) and two more long polls after the answer: a re-delivery would be queued
    # and answered by now if the de-duplication let it through.
    polls = len(platform.offsets)
    wait_until(
        lambda: (
            any(isinstance(o, int) and o > UPDATE_ID for o in platform.offsets) and len(platform.offsets) >= polls + 2
        ),
        120,
        "two more getUpdates after the answer",
        interval=1,
    )
    assert len(platform.sends(CHAT)) == 1, [c.body for c in platform.sends(CHAT)]
    assert sends[0].text().strip()
    assert not platform.updates, "the update was never confirmed"


def test_egress_drop_policy_allows_the_list_and_logs_the_rest(
    test_vm: TestVM, egress_only: PlatformStandIn, runner_http: int
) -> None:
    ruleset = test_vm.ssh("nft list chain inet filter output").stdout
    assert "policy drop;" in ruleset and f"dport {runner_http}" in ruleset and f"dport {egress_only.port}" in ruleset
    allowed = test_vm.ssh(f"curl -sS -m 20 http://10.0.2.2:{runner_http}/", timeout=60)
    assert allowed.stdout == "egress-ok", allowed.stderr
    outside = next(port for port in range(runner_http + 1, 65536) if port != egress_only.port)
    refused = test_vm.ssh(f"curl -sS -m 10 http://10.0.2.2:{outside}/", timeout=60)
    assert refused.returncode != 0
    # The log rule is rate-limited (a flood of refusals must not flood the journal), and the guest's own refused
    # packets (time sync, mirrors) share the budget: one attempt's line can be skipped, so each poll tries again.
    probe = (
        f"curl -sS -m 5 http://10.0.2.2:{outside}/ >/dev/null 2>&1; "
        f"journalctl -k --since=-5min --no-pager | grep -c 'nft-egress-drop: .*DST=10.0.2.2 .*DPT={outside} '"
    )
    wait_until(
        lambda: test_vm.ssh(probe).stdout.strip() not in ("", "0"),
        90,
        f"an nft-egress-drop log line for the refused connection to port {outside}",
        5,
    )


def test_the_answer_crosses_the_tls_link(test_vm: TestVM, egress_only: PlatformStandIn) -> None:
    address = test_vm.private_address()
    # The answer of the test above went through the link: its connections are in the link's journal (one line each,
    # written when a connection closes), TLS 1.3, a request in and an answer out. Read before this test's own probes.
    journal = test_vm.ssh("journalctl -t link_tls --since=-60min --no-pager -o cat").stdout
    carried = [
        line
        for line in journal.splitlines()
        if "port=8089" in line
        and "tls=TLSv1.3" in line
        and int(re.search(r"received=(\d+)", line).group(1)) > 200  # type: ignore[union-attr]
        and int(re.search(r"sent=(\d+)", line).group(1)) > 200  # type: ignore[union-attr]
    ]
    assert carried, f"no connection of the assistant's crossed the link:\n{journal[-3000:]}"
    config = test_vm.ssh("cat /etc/ai-assistant/assistant.yaml").stdout
    assert f"base_url: https://{address}:8089/v1" in config and "ca_file: /etc/ai-assistant/engine-ca.pem" in config
    # The model server itself answers on loopback only; on the private address only the link listens.
    listening = sorted(line.split()[3] for line in test_vm.ssh("ss -Hltn 'sport = :8089'").stdout.splitlines())
    assert listening == sorted(["127.0.0.1:8089", f"{address}:8089"]), listening
    ca = "/etc/ssl/ai-assistant/internal-ca.crt"
    url = f"https://{address}:8089/v1/models"  # the OpenAI-compatible list both llama.cpp's server and TGI serve
    verified = test_vm.ssh(f"curl -sS -m 20 --cacert {ca} {url}", timeout=60)
    assert verified.returncode == 0 and '"data"' in verified.stdout, verified.stdout + verified.stderr
    # No plaintext path, no certificate but the internal CA's, nothing below TLS 1.3.
    assert test_vm.ssh(f"curl -sS -m 20 http://{address}:8089/v1/models", timeout=60).returncode == 52  # empty reply
    assert test_vm.ssh(f"curl -sS -m 20 {url}", timeout=60).returncode == 60  # not in the system trust store
    assert test_vm.ssh(f"curl -sS -m 20 --tls-max 1.2 --cacert {ca} {url}", timeout=60).returncode == 35


# Run by the deployed venv's Python as root: the stand-in where Weaviate would listen (loopback, plain: REST on
# weaviate_port 8082, gRPC on Weaviate's own 50052), then the store through the data play's links on the private
# address (8082 and 50051) with the internal CA, then the two ways in that must fail. One JSON line out.
GUEST_KNOWLEDGE = """
import json, subprocess, sys
from pathlib import Path
sys.path.insert(0, "/root")
from weaviate_standin import StandIn
from ai_assistant.knowledge.errors import StoreError
from ai_assistant.knowledge.stores.weaviate import WeaviateStore

route = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.1"], capture_output=True, text=True).stdout
address = route.split(" src ")[1].split()[0]
KEY = "vm-key"  # pragma: allowlist secret
standin = StandIn(KEY, http_port=8082, grpc_port=50052).start()
out = {}
store = WeaviateStore(f"https://{address}:8082", 384, "m", api_key=KEY, grpc_port=50051,
                      ca_file=Path("/etc/ssl/ai-assistant/internal-ca.crt"), timeout=60)
store.close()
out["seen"] = {"http": list(standin.seen.http), "grpc": list(standin.seen.grpc), "refused": standin.seen.refused}
for case, url in (("no_ca_file", f"https://{address}:8082"), ("plain", f"http://{address}:8082")):
    try:
        WeaviateStore(url, 384, "m", api_key=KEY, grpc_port=50051, timeout=60).close()
        out[case] = "connected"
    except StoreError as exc:
        out[case] = str(exc)
out["seen_after"] = len(standin.seen.http) + len(standin.seen.grpc)
print(json.dumps(out))
"""


def test_the_knowledge_store_crosses_the_data_hosts_links(test_vm: TestVM, egress_only: PlatformStandIn) -> None:
    """Issue 23 item 4, Weaviate's row: REST and gRPC through link_tls (TLS 1.3, the internal CA's certificate for the
    private address), verified by the store's own code against the CA file the assistant role writes; a client that
    does not trust the internal CA, or speaks plaintext, gets nothing through."""
    ssh = ["ssh", "-F", str(test_vm.ssh_config), "testvm"]
    standin = (REPO / "tests/knowledge/weaviate_standin.py").read_text()
    put = subprocess.run([*ssh, "cat > /root/weaviate_standin.py"], input=standin, capture_output=True, text=True)
    assert put.returncode == 0, put.stderr
    out = json.loads(test_vm.python(GUEST_KNOWLEDGE, user=None).strip().splitlines()[-1])
    seen = out["seen"]
    # Through the links: the version and the collections over REST, the health check over gRPC, each with the key.
    assert seen["http"][0] == "GET /v1/meta" and "POST /v1/schema" in seen["http"], seen
    assert seen["grpc"] == ["Health"] and seen["refused"] == [], seen
    assert "the server's TLS certificate is not trusted" in out["no_ca_file"], out["no_ca_file"]
    assert out["plain"].startswith("weaviate at http://") and "cannot connect" in out["plain"], out["plain"]
    # Neither failed attempt reached the stand-in.
    assert out["seen_after"] == len(seen["http"]) + len(seen["grpc"]), out
    # Each connection is a line in the link's journal when it closes: both links, TLS 1.3.
    lines: list[str] = []

    def logged() -> bool:
        journal = test_vm.ssh("journalctl -t link_tls --since=-10min --no-pager -o cat").stdout
        lines[:] = [line for line in journal.splitlines() if "tls=TLSv1.3" in line]
        return all(any(f"port={port} " in line for line in lines) for port in (8082, 50051))

    wait_until(logged, 60, "the link's journal lines of the knowledge store's connections", 3)
    # Weaviate's ports on the private address are the link's; the service's own are on loopback (REST) or not
    # opened by the firewall (gRPC).
    address = test_vm.private_address()
    listening = test_vm.ssh("ss -Hltn 'sport = :8082 or sport = :50051'").stdout
    assert f"{address}:8082" in listening and f"{address}:50051" in listening, listening
