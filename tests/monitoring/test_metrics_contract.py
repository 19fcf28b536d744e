"""Every metric name that an alert rule, a recording rule or a dashboard query uses is exported by something real:
the service's /metrics (its registry, as `ai-assistant serve` serves it), node_exporter (with the backup job's
textfile), blackbox_exporter probing a real TLS listener, Prometheus and Alertmanager themselves, all on loopback."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port, wait_until

from .conftest import MONITORING, RULES, tool
from .promql import metric_names
from .test_dashboards import committed, targets

# Series that Prometheus makes itself for every target or alert.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}


def exported(text: str) -> set[str]:
    """Sample names a /metrics page can hold, from its TYPE lines (families without children included) and samples."""
    names: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
        names.update(name + s for s in suffixes.get(kind, ("",)))
    names.update(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return names


def service_metrics() -> str:
    from prometheus_client import REGISTRY, generate_latest

    import ai_assistant.app  # noqa: F401 - registers every metric the served app exports

    return generate_latest(REGISTRY).decode()


class Daemons:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> None:
        log = (self.workdir / f"{Path(name).name}.log").open("wb")
        self.procs.append(subprocess.Popen([tool(name), *args], stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2)
        return r.text if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def exporters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("exporters")
    daemons = Daemons(work)
    ports = {k: free_port() for k in ("node", "blackbox", "tls", "prometheus", "alertmanager")}
    try:
        # The backup job's textfile, written by the code that `ai-assistant backup create` runs.
        from ai_assistant.backup import metrics as backup_metrics

        textfile = work / "textfile"
        backup_metrics.write(textfile, "sqlite", ok=True, duration=12.5, size=4096, now=1.7e9)
        # roles/base's reboot-required script (NodeRebootRequired), rendered from the role and run for real.
        from tests.roles.test_static import render

        script = work / "reboot-required-metric"
        script.write_text(
            render("base", "reboot-required-metric.j2", {"base_reboot_required_textfile_dir": str(textfile)})
        )
        subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=60)
        # The AIDE check's and journal-upload's ExecStopPost scripts (FileIntegrity*, LogShippingFailing), with what
        # systemd passes them after a check that found differences and after a failed upload.
        for role, template, dir_var, env in (
            (
                "base",
                "aide-check-metric.j2",
                "base_integrity_textfile_dir",
                {"EXIT_CODE": "exited", "EXIT_STATUS": "1"},
            ),
            ("journal_upload", "failure-metric.j2", "journal_upload_textfile_dir", {"SERVICE_RESULT": "exit-code"}),
        ):
            script = work / template.removesuffix(".j2")
            script.write_text(render(role, template, {dir_var: str(textfile)}))
            env = {"PATH": "/usr/bin:/bin", **env}
            subprocess.run(["sh", str(script)], check=True, capture_output=True, timeout=60, env=env)
        # The declaration the last play of a converge writes beside them (FileIntegrityCheckNeverRan).
        (textfile / "aide_enabled.prom").write_text(render("base", "aide-enabled.prom.j2", {}))
        daemons.start(
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{ports['node']}",
            f"--collector.textfile.directory={textfile}",
        )
        # A real TLS listener for blackbox_exporter's probe (self-signed, so the test module skips verification).
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
                *(
                    "-days",
                    "30",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    str(work / "key.pem"),
                    "-out",
                    str(work / "cert.pem"),
                ),
            ],
            check=True,
            capture_output=True,
        )
        daemons.start(
            "openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{ports['tls']}",
            "-cert", str(work / "cert.pem"), "-key", str(work / "key.pem"),
        )  # fmt: skip
        blackbox = yaml.safe_load((MONITORING / "blackbox" / "blackbox.yml").read_text())
        blackbox["modules"]["tls_connect"]["tcp"]["tls_config"]["insecure_skip_verify"] = True
        (work / "blackbox.yml").write_text(yaml.safe_dump(blackbox))
        daemons.start(
            "prometheus-blackbox-exporter",
            f"--config.file={work / 'blackbox.yml'}",
            f"--web.listen-address=127.0.0.1:{ports['blackbox']}",
        )
        # One rule group and one Alertmanager: Prometheus only exports the per-group and per-Alertmanager series then.
        (work / "rules.yml").write_text("groups: [{name: g, rules: [{record: 'x:up:sum', expr: 'sum(up)'}]}]\n")
        (work / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1m", "evaluation_interval": "1s"},
                    "rule_files": [str(work / "rules.yml")],
                    "alerting": {
                        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]
                    },
                }
            )
        )
        daemons.start(
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        )
        (work / "alertmanager.yml").write_text("route: {receiver: none}\nreceivers: [{name: none}]\n")
        daemons.start(
            "prometheus-alertmanager",
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am'}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
            "--cluster.listen-address=",
        )
        probe = f"http://127.0.0.1:{ports['blackbox']}/probe?module=tls_connect&target=127.0.0.1:{ports['tls']}"
        pages = {
            "node": f"http://127.0.0.1:{ports['node']}/metrics",
            "blackbox": probe,
            "prometheus": f"http://127.0.0.1:{ports['prometheus']}/metrics",
            "alertmanager": f"http://127.0.0.1:{ports['alertmanager']}/metrics",
        }
        out = {}
        for name, url in pages.items():
            out[name] = wait_until(lambda url=url: _get(url), 20, f"{name} at {url}")
        # Once the rule group ran and the Alertmanager was discovered (every 5 s), their series are on the page.
        wanted = ("prometheus_rule_evaluation_failures_total{", "prometheus_notifications_errors_total{")
        out["prometheus"] = wait_until(
            lambda: (t := _get(pages["prometheus"]) or "") and all(w in t for w in wanted) and t,
            30,
            "Prometheus to evaluate its rule group and discover its Alertmanager",
        )
        wait_until(lambda: "probe_success 1" in (_get(probe) or ""), 10, "a successful TLS probe")
        out["blackbox"] = _get(probe) or ""
        out["service"] = service_metrics()
        yield out
    finally:
        daemons.stop()


def _rule_exprs() -> dict[str, str]:
    out = {}
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out[f"{path.name}: {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    return out


def _recorded() -> set[str]:
    return {
        rule["record"]
        for path in RULES.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def _dashboard_exprs() -> dict[str, str]:
    out = {}
    for uid, doc in committed().items():
        for title, target in targets(doc):
            out[f"{uid}: {title}"] = target["expr"]
        for var in doc["templating"]["list"]:
            if var["type"] == "query":
                out[f"{uid}: ${var['name']}"] = var["query"].removeprefix("label_values(").rsplit(",", 1)[0]
    return out


def test_the_name_extractor_finds_names_and_only_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (engine, le) (rate(a_b_bucket{le="0.2", x=~"y|z"}[5m])))\n'
        "/ on (slo) group_left () slo:error_budget:ratio offset 1h > 1e3 and c_total unless time() - d_seconds"
    )
    assert metric_names(expr) == {"a_b_bucket", "slo:error_budget:ratio", "c_total", "d_seconds"}


def test_the_service_exports_what_monitoring_expects(exporters: dict[str, str]) -> None:
    service = exported(exporters["service"])
    for name in (
        "ai_assistant_request_total",
        "ai_assistant_response_time_seconds_bucket",
        "ai_assistant_answers_total",
        "ai_assistant_feedback_total",
        "ai_assistant_kb_queries_total",
        "ai_assistant_kb_retrieval_duration_seconds_bucket",
        "ai_assistant_kb_chunks",
    ):
        assert name in service, f"{name} is not on the service's /metrics"


def test_node_exporter_reads_the_backup_textfile(exporters: dict[str, str]) -> None:
    assert 'ai_assistant_backup_last_success_timestamp_seconds{target="sqlite"} 1.7e+09' in exporters["node"]
    assert 'ai_assistant_backup_last_run_success{target="sqlite"} 1' in exporters["node"]


def test_node_exporter_reads_the_aide_and_journal_upload_textfiles(exporters: dict[str, str]) -> None:
    page = exporters["node"]
    for line in (
        "node_aide_check_differences 1",
        "node_aide_check_failed 0",
        "node_aide_check_enabled 1",
        "node_journal_upload_failures_total 1",
    ):
        assert re.search(rf"^{line}$", page, re.M), f"{line!r} is not on node_exporter's page"
    for name in ("node_aide_check_timestamp_seconds", "node_journal_upload_last_failure_timestamp_seconds"):
        assert re.search(rf"^{name} \d", page, re.M), f"{name} is not on node_exporter's page"


def test_blackbox_reports_certificate_expiry(exporters: dict[str, str]) -> None:
    assert re.search(r"^probe_ssl_earliest_cert_expiry \d", exporters["blackbox"], re.M), exporters["blackbox"][-2000:]


@pytest.mark.parametrize("source", ["rules", "dashboards"])
def test_every_metric_used_is_exported_by_something_real(exporters: dict[str, str], source: str) -> None:
    known = set().union(*(exported(text) for text in exporters.values())) | _recorded() | SYNTHETIC
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    missing = sorted(
        f"{where}: {name}" for where, expr in exprs.items() for name in metric_names(expr) if name not in known
    )
    assert not missing, "\n".join(missing)


def _documented() -> dict[str, set[str]]:
    """metric -> label names, from the tables of docs/metrics.md (`| `name` | type | `a`, `b` | ... |`)."""
    out = {}
    for line in (MONITORING.parent / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"^\| `(ai_assistant_[a-z_]+)(?:\{[^}]*\})?` \| (\w+) \| ([^|]*) \|", line)
        if m:
            out[m.group(1)] = set(re.findall(r"`([a-z_]+)`", m.group(3)))
    return out


def test_every_service_metric_is_documented_with_its_labels() -> None:
    from prometheus_client import REGISTRY

    service_metrics()  # imports the app, which registers everything it serves
    documented = _documented()
    problems = []
    # prometheus-client keeps label names on the collector only (families without children carry no samples).
    for collector in list(REGISTRY._collector_to_names):
        name = getattr(collector, "_name", "")
        if not name.startswith("ai_assistant_"):
            continue
        exposed = name + "_total" if getattr(collector, "_type", "") == "counter" else name
        labels = set(getattr(collector, "_labelnames", ()))
        if exposed not in documented:
            problems.append(f"{exposed} is not in docs/metrics.md")
        elif documented[exposed] != labels:
            problems.append(
                f"{exposed}: labels {sorted(labels)} in the code, {sorted(documented[exposed])} in the docs"
            )
    assert not problems, "\n".join(problems)


# promtool reads `kb` as kilobytes. Here it means knowledge base; the names are the agreed interface (docs/metrics.md),
# so these three findings are accepted, and any other finding fails the test.
ACCEPTED_LINT = {
    f"{name} metric names should not contain abbreviated units"
    for name in (
        "ai_assistant_kb_chunks",
        "ai_assistant_kb_queries_total",
        "ai_assistant_kb_retrieval_duration_seconds",
    )
}


def test_promtool_lints_the_service_metrics(promtool: str) -> None:
    """Naming rules (counters end in _total, base units, no abbreviations) on what the service serves."""
    proc = subprocess.run([promtool, "check", "metrics"], input=service_metrics(), capture_output=True, text=True)
    findings = {line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()}
    assert findings <= ACCEPTED_LINT, "\n".join(sorted(findings - ACCEPTED_LINT))
    assert proc.returncode in (0, 3)  # 3: lint findings only (all of them accepted above)
