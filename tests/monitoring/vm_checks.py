"""Behaviour checks of the monitoring roles on a converged host, for the roles' VM harness (tests/roles/test_vm.py)
to call with its testinfra `host` once playbooks/monitoring.yml is part of site.yml:

    from tests.monitoring.vm_checks import check_alertmanager, check_node_exporter, check_prometheus

    def test_monitoring_roles(host): check_node_exporter(host); check_prometheus(host); check_alertmanager(host)

The VM's inventory then needs the host in the `monitoring` group, `monitoring_grafana: false` (no Grafana repository
offline), `alertmanager_assistant_token`, and prometheus, prometheus-alertmanager and prometheus-node-exporter in
tests/roles/vm/image-packages.txt (apt under TCG is slow). Each check asserts with a message that names what failed.
"""

from __future__ import annotations

import json
from typing import Any


def _json(host: Any, url: str) -> Any:
    out = host.run(f"curl -sf {url}")
    assert out.rc == 0, f"{url} did not answer: {out.stderr}"
    return json.loads(out.stdout)


def check_node_exporter(host: Any) -> None:
    service = host.service("prometheus-node-exporter")
    assert service.is_running and service.is_enabled, "prometheus-node-exporter is not running and enabled"
    assert host.socket("tcp://0.0.0.0:9100").is_listening or host.socket("tcp://:::9100").is_listening
    proc = host.process.get(comm="prometheus-node")
    assert proc.user == "prometheus", f"node_exporter runs as {proc.user}"
    assert host.file("/var/lib/prometheus/node-exporter").is_directory
    metrics = host.run("curl -sf 127.0.0.1:9100/metrics").stdout
    assert "node_uname_info" in metrics and 'collector="textfile"' in metrics


def check_prometheus(host: Any) -> None:
    service = host.service("prometheus")
    assert service.is_running and service.is_enabled, "prometheus is not running and enabled"
    assert host.socket("tcp://127.0.0.1:9090").is_listening, "prometheus does not listen on 127.0.0.1:9090"
    assert not host.socket("tcp://0.0.0.0:9090").is_listening, "prometheus listens on every interface"
    check = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert check.rc == 0, check.stdout + check.stderr
    groups = _json(host, "127.0.0.1:9090/api/v1/rules")["data"]["groups"]
    names = {g["name"] for g in groups}
    assert {"slo-objectives", "slo", "assistant", "host"} <= names, f"rule groups loaded: {sorted(names)}"
    budget = _json(host, "127.0.0.1:9090/api/v1/query?query=slo:error_budget:ratio")["data"]["result"]
    assert budget, "slo:error_budget:ratio has no value: the objectives file is not loaded"
    targets = _json(host, "127.0.0.1:9090/api/v1/targets")["data"]["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets}
    assert {"prometheus", "alertmanager", "node"} <= jobs, f"scrape jobs: {sorted(jobs)}"
    rules = host.file("/etc/prometheus/rules/assistant.rules.yml")
    assert rules.user == "root" and rules.group == "prometheus" and rules.mode == 0o640


def check_alertmanager(host: Any) -> None:
    service = host.service("prometheus-alertmanager")
    assert service.is_running and service.is_enabled, "prometheus-alertmanager is not running and enabled"
    assert host.socket("tcp://127.0.0.1:9093").is_listening, "alertmanager does not listen on 127.0.0.1:9093"
    assert not host.socket("tcp://0.0.0.0:9094").is_listening, "cluster gossip listens on 0.0.0.0:9094"
    check = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert check.rc == 0, check.stdout + check.stderr
    token = host.file("/etc/prometheus/alertmanager-assistant.token")
    assert token.user == "root" and token.group == "prometheus" and token.mode == 0o640
    assert "credentials_file" in host.file("/etc/prometheus/alertmanager.yml").content_string
    status = _json(host, "127.0.0.1:9093/api/v2/status")
    assert status["cluster"]["status"] == "disabled", status["cluster"]
