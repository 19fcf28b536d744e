"""Prometheus recording and alerting rules, generated from one table so that every alert gets the same label set,
a severity and a runbook link added in one place, and the SLO burn-rate alerts come from the SRE workbook's table.

`python -m monitoring.rulegen` rewrites monitoring/prometheus/rules/ from monitoring/config.yml;
`python -m monitoring.rulegen --check` fails when the committed files differ from what the table says
(tests/monitoring/test_rules.py runs it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.utils import floatToGoString

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yml"
RULES_DIR = HERE / "prometheus" / "rules"

# Scrape job names: monitoring/prometheus/prometheus.yml and roles/prometheus use the same ones.
JOB_ASSISTANT = "ai-assistant"
JOB_MODEL_SERVER = "model-server"
JOB_WEAVIATE = "weaviate"
JOB_NODE = "node"

SLO_PERIOD = "30d"

# The multiwindow, multi-burn-rate table (Google SRE workbook, ch. 5; kubernetes-mixin). A burn rate of 14.4 spends
# 2 % of a 30-day budget in 1 h; 6 spends 5 % in 6 h; 3 spends 10 % in 1 d; 1 spends 10 % in 3 d. The short window
# makes the alert stop soon after the burn stops, so the pages need no `for:` of their own.
BURN_RATES: tuple[tuple[str, str, str, float], ...] = (
    # severity, long window, short window, burn-rate factor
    ("critical", "1h", "5m", 14.4),
    ("critical", "6h", "30m", 6),
    ("warning", "1d", "2h", 3),
    ("warning", "3d", "6h", 1),
)
SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


class ConfigError(Exception):
    """One line naming the file and key."""


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)
    comment: str = ""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str = "0s"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleFile:
    """One rule file = one area = one runbook page (docs/runbooks/<area>.md) = one `service` label."""

    area: str
    service: str
    recordings: tuple[Recording, ...] = ()
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True)
class Slo:
    name: str
    objective: float
    threshold_seconds: float | None = None


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------
SLO_THRESHOLDS = {"availability": False, "ack_latency": True, "answer_latency": True}


def _by_host(expr: str) -> str:
    """The series of `expr` with a `host` label: its instance without the port (the host's blue and green slots)."""
    return f'label_replace({expr}, "host", "$1", "instance", "(.+):[0-9]+")'


def load_config(path: Path = CONFIG) -> tuple[str, list[Slo]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping at the top level")
    base = data.get("runbook_base_url")
    if not isinstance(base, str) or not base.startswith(("https://", "http://")):
        raise ConfigError(f"{path}: runbook_base_url: must be an http(s) URL")
    slos_raw = data.get("slos")
    if not isinstance(slos_raw, dict):
        raise ConfigError(f"{path}: slos: required mapping is missing")
    slos: list[Slo] = []
    for name, needs_threshold in SLO_THRESHOLDS.items():
        entry = slos_raw.get(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: slos.{name}: required mapping is missing")
        objective = entry.get("objective")
        if isinstance(objective, bool) or not isinstance(objective, int | float) or not 0.5 <= objective < 1:
            raise ConfigError(f"{path}: slos.{name}.objective: must be a number in [0.5, 1), e.g. 0.9995")
        threshold = entry.get("threshold_seconds")
        if needs_threshold and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold <= 0
        ):
            raise ConfigError(f"{path}: slos.{name}.threshold_seconds: must be a positive number of seconds")
        slos.append(
            Slo(name, float(objective), float(threshold) if needs_threshold and threshold is not None else None)
        )
    unknown = sorted(set(slos_raw) - set(SLO_THRESHOLDS))
    if unknown:
        raise ConfigError(f"{path}: slos.{unknown[0]}: unknown SLO (known: {', '.join(SLO_THRESHOLDS)})")
    return base.rstrip("/"), slos


def _pct(ratio: float) -> str:
    return f"{round(ratio * 100, 6):g}%"


def error_budget(objective: float) -> float:
    # round() keeps the constant readable: 1 - 0.9995 is 0.000499999999999945 in binary floating point.
    return round(1 - objective, 10)


# ---------------------------------------------------------------------------------------------------------------
# SLO rules
# ---------------------------------------------------------------------------------------------------------------
def _le(seconds: float) -> str:
    # The `le` label as prometheus-client writes it (60 -> "60.0"); Prometheus 2.x matches it as a string.
    return str(floatToGoString(seconds))  # type: ignore[no-untyped-call]


def sli_error_ratio(slo: Slo, window: str) -> str:
    """Bad events / valid events over `window`, as one series without labels."""
    if slo.name == "availability":
        # status="error" counts rejections too; a flood of forged requests must not spend the budget.
        return (
            f"clamp_min(\n"
            f'  (sum(rate(ai_assistant_request_total{{status="error"}}[{window}])) or vector(0))\n'
            f"  - (sum(rate(ai_assistant_webhook_rejected_total[{window}])) or vector(0)),\n"
            f"  0\n"
            f")\n"
            f"/\n"
            f"(\n"
            f"  sum(rate(ai_assistant_request_total[{window}]))\n"
            f"  - (sum(rate(ai_assistant_webhook_rejected_total[{window}])) or vector(0))\n"
            f")"
        )
    metric = (
        "ai_assistant_response_time_seconds" if slo.name == "ack_latency" else "ai_assistant_answer_duration_seconds"
    )
    assert slo.threshold_seconds is not None
    le = _le(slo.threshold_seconds)
    return (
        f"(\n"
        f"  sum(rate({metric}_count[{window}]))\n"
        f'  - sum(rate({metric}_bucket{{le="{le}"}}[{window}]))\n'
        f")\n"
        f"/\n"
        f"sum(rate({metric}_count[{window}]))"
    )


SLO_TEXT = {
    "availability": "webhooks acknowledged without a server-side failure",
    "ack_latency": "webhooks acknowledged within {threshold}",
    "answer_latency": "answers delivered within {threshold}",
}


def slo_objective_file(slos: list[Slo]) -> RuleFile:
    """The only per-deployment part of the SLO rules; roles/prometheus renders the same shape from its variables."""
    recs: list[Recording] = []
    for slo in slos:
        recs.append(Recording("slo:objective:ratio", f"vector({slo.objective!r})", {"slo": slo.name}))
        recs.append(Recording("slo:error_budget:ratio", f"vector({error_budget(slo.objective)!r})", {"slo": slo.name}))
    return RuleFile("slo-objectives", JOB_ASSISTANT, recordings=tuple(recs))


def slo_file(slos: list[Slo]) -> RuleFile:
    recs: list[Recording] = []
    alerts: list[Alert] = []
    for slo in slos:
        for w in SLI_WINDOWS:
            recs.append(Recording(f"slo:sli_error:ratio_rate{w}", sli_error_ratio(slo, w), {"slo": slo.name}))
        what = SLO_TEXT[slo.name].format(
            threshold=f"{slo.threshold_seconds:g} s" if slo.threshold_seconds is not None else ""
        )
        name = "AIAssistant" + "".join(p.title() for p in slo.name.split("_")) + "BudgetBurn"
        for severity, long_w, short_w, factor in BURN_RATES:
            sel = f'{{slo="{slo.name}"}}'
            expr = (
                f"slo:sli_error:ratio_rate{long_w}{sel} > {factor:g} * slo:error_budget:ratio{sel}\n"
                f"and\n"
                f"slo:sli_error:ratio_rate{short_w}{sel} > {factor:g} * slo:error_budget:ratio{sel}"
            )
            alerts.append(
                Alert(
                    name=name,
                    expr=expr,
                    severity=severity,
                    labels={"slo": slo.name, "long_window": long_w, "short_window": short_w},
                    summary=f"SLO {slo.name}: the {SLO_PERIOD} error budget burns {factor:g}x too fast",
                    description=(
                        "{{ $value | humanizePercentage }} of events over the last "
                        f"{long_w} missed the objective ({_pct(slo.objective)} of {what}); that is more than"
                        f" {factor:g}x the error budget, and the burn goes on over {short_w}."
                    ),
                )
            )
    return RuleFile("slo", JOB_ASSISTANT, tuple(recs), tuple(alerts))


# ---------------------------------------------------------------------------------------------------------------
# Symptom and cause alerts. Thresholds are explained in docs/monitoring.md.
# ---------------------------------------------------------------------------------------------------------------
def assistant_file() -> RuleFile:
    recs = (
        Recording(
            "job:ai_assistant_request_errors:ratio_rate5m",
            'sum by (job) (rate(ai_assistant_request_total{status="error"}[5m]))\n'
            "/\n"
            "sum by (job) (rate(ai_assistant_request_total[5m]))",
        ),
        # Business: "task completed" = a message that ended answered; blocked ones are refused on purpose and left
        # out of the denominator (docs/metrics.md).
        Recording(
            "connector:ai_assistant_task_completion:ratio_rate1h",
            'sum by (connector) (rate(ai_assistant_answers_total{outcome="answered"}[1h]))\n'
            "/\n"
            'sum by (connector) (rate(ai_assistant_answers_total{outcome!="blocked"}[1h]))',
        ),
        Recording(
            "connector:ai_assistant_feedback_positive:ratio_rate1d",
            'sum by (connector) (rate(ai_assistant_feedback_total{rating="positive"}[1d]))\n'
            "/\n"
            "sum by (connector) (rate(ai_assistant_feedback_total[1d]))",
        ),
        Recording(
            "connector:ai_assistant_deliveries_failed:ratio_rate10m",
            'sum by (connector) (rate(ai_assistant_deliveries_total{outcome="failed"}[10m]))\n'
            "/\n"
            "sum by (connector) (rate(ai_assistant_deliveries_total[10m]))",
        ),
    )
    alerts = (
        Alert(
            "AIAssistantDown",
            # Each host runs a blue and a green slot (docs/runbooks/deploy.md); only the serving one is up, so a
            # slot that is down pages only when no slot on its host answers.
            _by_host(f'up{{job="{JOB_ASSISTANT}"}} == 0')
            + "\nunless on (host)\n"
            + _by_host(f'up{{job="{JOB_ASSISTANT}"}} == 1'),
            "critical",
            "The assistant on {{ $labels.host }} does not answer scrapes",
            "Prometheus has failed to scrape {{ $labels.instance }} for 2 minutes and no other slot (blue/green) on"
            " {{ $labels.host }} answers. Webhooks to it are not acknowledged; IM platforms retry for a while, then"
            " drop the messages. This alert reaches you through the fallback receivers only (e-mail, webhook): the IM"
            " receiver goes through the assistant itself.",
            for_="2m",
        ),
        Alert(
            "AIAssistantHighErrorRatio",
            "job:ai_assistant_request_errors:ratio_rate5m > 0.05",
            "warning",
            "{{ $value | humanizePercentage }} of webhook requests fail or are rejected",
            "More than 5 % of webhook requests to job {{ $labels.job }} ended with status=error (rejected or failed)"
            " for 10 minutes. Rejections by reason: ai_assistant_webhook_rejected_total.",
            for_="10m",
        ),
        Alert(
            "AIAssistantSignatureFailures",
            'sum by (connector) (increase(ai_assistant_webhook_rejected_total{reason="signature"}[10m])) > 10',
            "warning",
            "Connector {{ $labels.connector }}: {{ $value | humanize }} webhooks with a bad signature in 10 minutes",
            "Requests to connector {{ $labels.connector }} keep failing signature checks: either someone is forging"
            " requests, or the signing secret was rotated on the platform and not in connectors.yaml.",
            for_="5m",
        ),
        Alert(
            "AIAssistantQueueBacklog",
            "ai_assistant_queue_depth > 50",
            "warning",
            "{{ $value }} messages are waiting for an answer on {{ $labels.instance }}",
            "The queue has held more than 50 messages for 10 minutes: the workers cannot keep up (slow model server,"
            " too few workers) or are stuck.",
            for_="10m",
        ),
        Alert(
            "AIAssistantQueueOldestMessageAge",
            "ai_assistant_queue_oldest_age_seconds > 300",
            "critical",
            "The oldest unanswered message on {{ $labels.instance }} is {{ $value | humanizeDuration }} old",
            "A user has waited more than 5 minutes for an answer, for 5 minutes in a row. Workers are stuck or the"
            " model server is down.",
            for_="5m",
        ),
        # Quota drops are left out: they are one user's flood, handled by design, not a capacity problem.
        Alert(
            "AIAssistantShedding",
            'sum by (instance, reason) (increase(ai_assistant_shed_total{reason=~"queue_full|too_old"}[10m])) > 0',
            "warning",
            "{{ $labels.instance }} sheds load: {{ $value | humanize }} messages ({{ $labels.reason }}) in 10 minutes",
            "Messages come faster than the workers answer them: some were refused with 503 at queue.max_depth"
            " (queue_full; the platform delivers them again) or got queue.busy_reply after waiting longer than"
            " queue.max_age_seconds (too_old). More workers (a bigger tier), another instance or a faster model"
            " server.",
            for_="5m",
        ),
        Alert(
            "AIAssistantWorkersDown",
            "ai_assistant_workers_up < ai_assistant_workers_configured",
            "critical",
            "Only {{ $value }} worker loop(s) on {{ $labels.instance }} can work",
            "For 5 minutes some worker loops on {{ $labels.instance }} have been failing (their last store call"
            " failed) or are not running: messages are acknowledged but not answered. /readyz names the cause.",
            for_="5m",
        ),
        Alert(
            "AIAssistantDeadLetters",
            'sum by (connector) (increase(ai_assistant_answers_total{outcome="dead"}[15m])) > 0',
            "warning",
            "Connector {{ $labels.connector }}: messages gave up after all attempts",
            "{{ $value | humanize }} messages from {{ $labels.connector }} were moved to the dead-letter state in the"
            " last 15 minutes: their users got no answer.",
        ),
        Alert(
            "AIAssistantDeliveryFailures",
            "connector:ai_assistant_deliveries_failed:ratio_rate10m > 0.1",
            "warning",
            "Connector {{ $labels.connector }}: {{ $value | humanizePercentage }} of sends to the platform fail",
            "More than 10 % of outbound API calls to {{ $labels.connector }} failed for 10 minutes: expired or"
            " revoked credentials, a rate limit, or the platform is down.",
            for_="10m",
        ),
        # Standby instances (Telegram's polling lease) report 0 too: the bot is down only when no instance is up.
        Alert(
            "AIAssistantStreamDown",
            "max by (connector) (ai_assistant_stream_up) == 0",
            "critical",
            "Connector {{ $labels.connector }}: no instance receives its events",
            "No instance has had a working long connection (mode: stream) for {{ $labels.connector }} for 5 minutes:"
            " its users' messages are not received. The reason is in ai_assistant_stream_errors_total and /readyz.",
            for_="5m",
        ),
    )
    return RuleFile("assistant", JOB_ASSISTANT, recs, alerts)


def model_server_file() -> RuleFile:
    recs = (
        Recording(
            "engine:ai_assistant_engine_errors:ratio_rate5m",
            "sum by (engine) (rate(ai_assistant_engine_errors_total[5m]))\n"
            "/\n"
            "sum by (engine) (rate(ai_assistant_engine_request_duration_seconds_count[5m]))",
        ),
        Recording(
            "engine:ai_assistant_engine_request_duration_seconds:p95_rate5m",
            "histogram_quantile(\n"
            "  0.95, sum by (engine, le) (rate(ai_assistant_engine_request_duration_seconds_bucket[5m]))\n"
            ")",
        ),
    )
    alerts = (
        Alert(
            "AIAssistantEngineErrors",
            "engine:ai_assistant_engine_errors:ratio_rate5m > 0.05",
            "critical",
            "Engine {{ $labels.engine }}: {{ $value | humanizePercentage }} of inference calls fail",
            "More than 5 % of calls to engine {{ $labels.engine }} failed after retries for 5 minutes; users get the"
            " apology reply instead of an answer.",
            for_="5m",
        ),
        Alert(
            "AIAssistantEngineLatencyHigh",
            "engine:ai_assistant_engine_request_duration_seconds:p95_rate5m > 15",
            "warning",
            "Engine {{ $labels.engine }}: p95 inference time is {{ $value | humanizeDuration }}",
            "The 95th percentile of inference calls to {{ $labels.engine }} has been above 15 s for 15 minutes:"
            " the model server is overloaded or running on the wrong device.",
            for_="15m",
        ),
        Alert(
            "ModelServerDown",
            f'up{{job="{JOB_MODEL_SERVER}"}} == 0',
            "critical",
            "The model server {{ $labels.instance }} does not answer scrapes",
            "Prometheus has failed to scrape the model server's metrics endpoint for 5 minutes.",
            for_="5m",
        ),
    )
    return RuleFile("model-server", JOB_MODEL_SERVER, recs, alerts)


def knowledge_file() -> RuleFile:
    recs = (
        Recording(
            "ai_assistant_kb_retrieval_duration_seconds:p95_rate5m",
            "histogram_quantile(0.95, sum by (le) (rate(ai_assistant_kb_retrieval_duration_seconds_bucket[5m])))",
        ),
        Recording(
            "ai_assistant_kb_queries:hit_ratio_rate1h",
            'sum(rate(ai_assistant_kb_queries_total{outcome="hit"}[1h]))\n/\nsum(rate(ai_assistant_kb_queries_total[1h]))',
        ),
    )
    alerts = (
        Alert(
            "WeaviateDown",
            f'up{{job="{JOB_WEAVIATE}"}} == 0',
            "warning",
            "Weaviate {{ $labels.instance }} does not answer scrapes",
            "Prometheus has failed to scrape Weaviate for 5 minutes. The assistant answers without the knowledge base.",
            for_="5m",
        ),
        Alert(
            "AIAssistantKnowledgeRetrievalSlow",
            "ai_assistant_kb_retrieval_duration_seconds:p95_rate5m > 0.5",
            "warning",
            "Knowledge-base retrieval p95 is {{ $value | humanizeDuration }}",
            "The 95th percentile of knowledge-base retrievals has been above 0.5 s for 15 minutes.",
            for_="15m",
        ),
        Alert(
            "AIAssistantKnowledgeBaseEmpty",
            "ai_assistant_kb_chunks == 0",
            "warning",
            "The knowledge base on {{ $labels.instance }} holds no chunks",
            "The knowledge base has been empty for 30 minutes: a restore or an ingest went wrong, or the collection"
            " was dropped.",
            for_="30m",
        ),
    )
    return RuleFile("knowledge", JOB_WEAVIATE, recs, alerts)


_FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs",mountpoint!~"/run($|/.*)"'


def host_file() -> RuleFile:
    recs = (
        Recording(
            "instance:node_cpu_utilisation:rate5m",
            '1 - avg without (cpu) (sum without (mode) (rate(node_cpu_seconds_total{mode=~"idle|iowait|steal"}[5m])))',
        ),
        Recording(
            "instance:node_memory_available:ratio",
            "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
        ),
        Recording(
            "instance_mountpoint:node_filesystem_avail:ratio",
            f"node_filesystem_avail_bytes{{{_FS}}} / node_filesystem_size_bytes{{{_FS}}}",
        ),
    )
    alerts = (
        Alert(
            "NodeExporterDown",
            f'up{{job="{JOB_NODE}"}} == 0',
            "warning",
            "node_exporter on {{ $labels.instance }} does not answer scrapes",
            "No host metrics (disk, memory, CPU, backup age) from {{ $labels.instance }} for 5 minutes.",
            for_="5m",
        ),
        Alert(
            "NodeFilesystemFillingUp",
            "instance_mountpoint:node_filesystem_avail:ratio < 0.2\n"
            "and\n"
            f"predict_linear(node_filesystem_avail_bytes{{{_FS}}}[6h], 24 * 3600) < 0",
            "warning",
            "{{ $labels.mountpoint }} on {{ $labels.instance }} will be full within a day",
            "Less than 20 % is free on {{ $labels.mountpoint }} and the trend of the last 6 hours fills it within 24"
            " hours.",
            for_="1h",
        ),
        Alert(
            "NodeFilesystemAlmostFull",
            "instance_mountpoint:node_filesystem_avail:ratio < 0.05",
            "critical",
            "{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} free",
            "Less than 5 % is free on {{ $labels.mountpoint }}. SQLite, Redis, Weaviate and Prometheus stop writing"
            " when the disk is full.",
            for_="30m",
        ),
        Alert(
            "NodeMemoryLow",
            "instance:node_memory_available:ratio < 0.1",
            "warning",
            "{{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory available",
            "Less than 10 % of memory has been available for 15 minutes; the OOM killer is next.",
            for_="15m",
        ),
        Alert(
            "NodeMemoryLow",
            "instance:node_memory_available:ratio < 0.05",
            "critical",
            "{{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory available",
            "Less than 5 % of memory has been available for 5 minutes; the OOM killer is next.",
            for_="5m",
        ),
        Alert(
            "NodeCPUBusy",
            "instance:node_cpu_utilisation:rate5m > 0.9",
            "warning",
            "{{ $labels.instance }} CPU is {{ $value | humanizePercentage }} busy",
            "CPU has been more than 90 % busy for 30 minutes. On the app tiers this slows acknowledgements.",
            for_="30m",
        ),
        Alert(
            "TLSCertificateExpiring",
            "probe_ssl_earliest_cert_expiry - time() < 14 * 86400",
            "warning",
            "The certificate served at {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
            "Renewal should have happened 30 days before expiry. Measured by blackbox_exporter's TLS probe.",
            for_="1h",
        ),
        Alert(
            "TLSCertificateExpiring",
            "probe_ssl_earliest_cert_expiry - time() < 3 * 86400",
            "critical",
            "The certificate served at {{ $labels.instance }} expires in {{ $value | humanizeDuration }}",
            "Platforms refuse to deliver webhooks to an endpoint with an expired certificate.",
            for_="10m",
        ),
        Alert(
            "TLSProbeFailed",
            "probe_success == 0",
            "warning",
            "The TLS probe of {{ $labels.instance }} fails",
            "blackbox_exporter cannot complete a TLS handshake with {{ $labels.instance }} for 10 minutes, so"
            " certificate expiry is not being measured either.",
            for_="10m",
        ),
        Alert(
            "BackupTooOld",
            "time() - ai_assistant_backup_last_success_timestamp_seconds > 26 * 3600",
            "warning",
            "The last successful {{ $labels.target }} backup on {{ $labels.instance }} is"
            " {{ $value | humanizeDuration }} old",
            "The nightly backup has not succeeded for more than 26 hours (RPO 24 h).",
        ),
        Alert(
            "BackupTooOld",
            "time() - ai_assistant_backup_last_success_timestamp_seconds > 50 * 3600",
            "critical",
            "The last successful {{ $labels.target }} backup on {{ $labels.instance }} is"
            " {{ $value | humanizeDuration }} old",
            "Two nightly backups in a row have not succeeded.",
        ),
        Alert(
            "BackupFailed",
            "ai_assistant_backup_last_run_success == 0",
            "critical",
            "The last {{ $labels.target }} backup on {{ $labels.instance }} failed",
            "ai-assistant-backup.service ended with an error; the off-site copy is getting older. Its journal names"
            " the cause on one line.",
            for_="5m",
        ),
        Alert(
            "BackupMetricMissing",
            "absent(ai_assistant_backup_last_success_timestamp_seconds)",
            "warning",
            "No host reports a backup timestamp",
            "No series ai_assistant_backup_last_success_timestamp_seconds for a day: the backup job never succeeded,"
            " or its textfile is not where node_exporter reads it.",
            for_="1d",
        ),
        # roles/base publishes node_reboot_required after each dpkg run: unattended-upgrades installs a new kernel,
        # libc or systemd but, without base_unattended_upgrades_reboot_time, the host runs the old code until a person
        # reboots it. A week covers a planned maintenance window.
        Alert(
            "NodeRebootRequired",
            "node_reboot_required == 1",
            "warning",
            "{{ $labels.instance }} waits for a reboot to finish installing updates",
            "An installed update (kernel, libc, systemd) needs a reboot and has waited for 7 days; until then the"
            " host runs the old, unpatched code.",
            for_="7d",
        ),
        # roles/base's daily AIDE check (CIS 6.3.2) publishes how it ended. A warning, not a page: every unattended
        # upgrade changes watched files (/usr/bin, /boot, /etc) and is reported until the next converge accepts it
        # (ADR 0117), so most differences are routine. It fires after the check and stays until a check finds none.
        Alert(
            "FileIntegrityDifferences",
            "node_aide_check_differences == 1",
            "warning",
            "The daily AIDE check on {{ $labels.instance }} found watched files that differ from the baseline",
            "Files under the watched paths were added, removed or changed since the last converge took the baseline."
            " An unattended upgrade explains its packages' files; anything else was changed outside Ansible. The"
            " report is in the host's journal (journalctl -u ai-assistant-aide-check).",
        ),
        Alert(
            "FileIntegrityCheckFailed",
            "node_aide_check_failed == 1",
            "warning",
            "The daily AIDE check on {{ $labels.instance }} could not compare the watched files",
            "aide ended with an error of its own (14 and above: configuration, database, I/O) or was killed; until a"
            " check completes, changes to the watched files go unreported.",
        ),
        # The timer is daily with up to an hour's random delay, and catches up after a host was off (Persistent=true):
        # more than 50 hours means two checks in a row did not finish.
        Alert(
            "FileIntegrityCheckStale",
            "time() - node_aide_check_timestamp_seconds > 50 * 3600",
            "warning",
            "No AIDE check has finished on {{ $labels.instance }} for {{ $value | humanizeDuration }}",
            "The daily check of the watched files has not finished for more than 50 hours: its timer is stopped, or"
            " the check hangs or never reaches its end.",
        ),
        # roles/base declares node_aide_check_enabled at the end of every converge where the check runs and publishes;
        # the check's own metric appears after its first run (within 25 hours of the converge). Stale covers a host
        # whose check finished once; this one a host where none ever did.
        Alert(
            "FileIntegrityCheckNeverRan",
            "node_aide_check_enabled == 1 unless on(instance) node_aide_check_timestamp_seconds",
            "warning",
            "The daily AIDE check on {{ $labels.instance }} has never published an outcome",
            "The host was converged with the daily check of the watched files, but for 50 hours no check has"
            " published how it ended: its timer never fired, the check never finished, or its metric script failed"
            " (journalctl -u ai-assistant-aide-check). Until one does, changes to the watched files go unreported.",
            for_="50h",
        ),
        # roles/journal_upload writes the time of every failed upload (the uploader exits, and systemd starts it again
        # after journal_upload_retry_seconds, 30 s). A failure within the last 5 minutes, held for 15 minutes, is an
        # outage: the window covers the retry interval plus a connection attempt to an unreachable log host, which the
        # kernel gives up after about 2 minutes. One failure (a restart killed while it finished a transfer) passes.
        Alert(
            "LogShippingFailing",
            "time() - node_journal_upload_last_failure_timestamp_seconds < 300",
            "warning",
            "{{ $labels.instance }} cannot ship its journal to the log host",
            "journal-upload has failed again and again for 15 minutes. The entries wait in the host's own journal and"
            " are sent from the saved cursor once the log host takes them again; until then they exist on this host"
            " only.",
            for_="15m",
        ),
    )
    return RuleFile("host", JOB_NODE, recs, alerts)


def monitoring_file() -> RuleFile:
    alerts = (
        # The dead man's switch: always firing, so its absence at the receiver (roles/alertmanager's watchdog route)
        # means Prometheus, Alertmanager or their host is gone. severity none: it pages nobody by itself.
        Alert(
            "Watchdog",
            "vector(1)",
            "none",
            "The alerting pipeline is alive",
            "Always firing. Alertmanager posts it to the dead man's switch every few minutes; that service pages when"
            " the posts stop, which no alert of this stack could report.",
        ),
        Alert(
            "TargetDown",
            f'up{{job!~"{JOB_ASSISTANT}|{JOB_MODEL_SERVER}|{JOB_WEAVIATE}|{JOB_NODE}"}} == 0',
            "warning",
            "Target {{ $labels.instance }} of job {{ $labels.job }} is down",
            "Prometheus has failed to scrape {{ $labels.job }} on {{ $labels.instance }} for 10 minutes.",
            for_="10m",
        ),
        Alert(
            "PrometheusRuleEvaluationFailures",
            "increase(prometheus_rule_evaluation_failures_total[5m]) > 0",
            "warning",
            "Prometheus fails to evaluate rules in {{ $labels.rule_group }}",
            "Alerts in that group may be silently broken.",
            for_="15m",
        ),
        Alert(
            "PrometheusNotificationsFailing",
            "rate(prometheus_notifications_errors_total[5m]) > 0",
            "critical",
            "Prometheus cannot send alerts to Alertmanager {{ $labels.alertmanager }}",
            "Alerts are evaluated but not delivered. Look at Prometheus' Alerts page until this is fixed.",
            for_="10m",
        ),
        Alert(
            "AlertmanagerNotificationsFailing",
            "rate(alertmanager_notifications_failed_total[5m]) > 0",
            "critical",
            "Alertmanager fails to deliver through {{ $labels.integration }}",
            "Notifications through the {{ $labels.integration }} integration fail. Critical alerts also go to"
            " the fallback receivers, so one broken receiver does not silence them.",
            for_="10m",
        ),
    )
    return RuleFile("monitoring", "monitoring", (), alerts)


def rule_files(slos: list[Slo]) -> list[RuleFile]:
    return [
        slo_objective_file(slos),
        slo_file(slos),
        assistant_file(),
        model_server_file(),
        knowledge_file(),
        host_file(),
        monitoring_file(),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rf: RuleFile, runbook_base: str) -> str:
    rules: list[dict[str, Any]] = []
    for rec in rf.recordings:
        entry: dict[str, Any] = {"record": rec.record, "expr": rec.expr}
        if rec.labels:
            entry["labels"] = dict(rec.labels)
        rules.append(entry)
    for a in rf.alerts:
        entry = {"alert": a.name, "expr": a.expr}
        if a.for_ != "0s":
            entry["for"] = a.for_
        entry["labels"] = {"severity": a.severity, "service": rf.service, **a.labels}
        entry["annotations"] = {
            "summary": a.summary,
            "description": a.description,
            "runbook_url": f"{runbook_base}/{rf.area}.md#{a.name.lower()}",
        }
        rules.append(entry)
    doc = {"groups": [{"name": rf.area, "rules": rules}]}
    header = "# Generated by `python -m monitoring.rulegen` from monitoring/rulegen.py and monitoring/config.yml.\n"
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def generate(config: Path = CONFIG) -> dict[str, str]:
    base, slos = load_config(config)
    return {f"{rf.area}.rules.yml": render(rf, base) for rf in rule_files(slos)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--out", type=Path, default=RULES_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out are not up to date")
    args = parser.parse_args(argv)
    try:
        files = generate(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [
        name for name, text in files.items() if not (args.out / name).is_file() or (args.out / name).read_text() != text
    ]
    extra = sorted(p.name for p in args.out.glob("*.rules.yml") if p.name not in files) if args.out.is_dir() else []
    if args.check:
        for name in stale:
            print(f"{args.out / name}: out of date; run `python -m monitoring.rulegen`", file=sys.stderr)
        for name in extra:
            print(f"{args.out / name}: not generated by monitoring/rulegen.py; remove it", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    for name in extra:
        (args.out / name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
