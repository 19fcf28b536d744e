"""Layer 3, the hosts: CPU, memory, disks, network, certificates, backups, scrape targets."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gdash

from .common import NODE, base, query_variable, ts

UID = "ai-assistant-infrastructure"
NIC = f'{NODE}, device!~"lo|veth.*"'


def build() -> gdash.Dashboard:
    d = base(
        "AI assistant / Infrastructure",
        UID,
        ["infrastructure"],
        "Hosts (node_exporter), TLS certificates (blackbox_exporter), backups and scrape targets.",
    ).with_variable(query_variable("node", "Host", 'label_values(node_uname_info{job="node"}, instance)'))
    d.with_row(gdash.Row("Hosts"))
    d.with_panel(
        ts(
            "CPU busy",
            "Recorded by instance:node_cpu_utilisation:rate5m (alert at 90 % for 30 min).",
            "percentunit",
            [('instance:node_cpu_utilisation:rate5m{instance=~"$node"}', "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Memory available",
            "MemAvailable / MemTotal (alerts at 10 % and 5 %).",
            "percentunit",
            [('instance:node_memory_available:ratio{instance=~"$node"}', "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Filesystem space available",
            "Per mount point; tmpfs and overlays left out (alerts at 20 % with a filling trend, and 5 %).",
            "percentunit",
            [('instance_mountpoint:node_filesystem_avail:ratio{instance=~"$node"}', "{{instance}} {{mountpoint}}")],
        )
    )
    d.with_panel(
        ts(
            "Load average (1 min)",
            "Compare with the number of CPUs of the tier.",
            "short",
            [(f"node_load1{{{NODE}}}", "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Network received",
            "Physical interfaces.",
            "Bps",
            [
                (
                    f"sum by (instance) (rate(node_network_receive_bytes_total{{{NIC}}}[$__rate_interval]))",
                    "{{instance}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Network sent",
            "Physical interfaces.",
            "Bps",
            [
                (
                    f"sum by (instance) (rate(node_network_transmit_bytes_total{{{NIC}}}[$__rate_interval]))",
                    "{{instance}}",
                )
            ],
        )
    )
    d.with_row(gdash.Row("Certificates, backups, targets"))
    d.with_panel(
        ts(
            "Certificate time left",
            "probe_ssl_earliest_cert_expiry from blackbox_exporter's TLS probe (alerts at 14 and 3 days).",
            "s",
            [("probe_ssl_earliest_cert_expiry - time()", "{{instance}}")],
            width=8,
        )
    )
    d.with_panel(
        ts(
            "Backup age",
            "Since the last successful backup, per target (alerts at 26 h and 50 h).",
            "s",
            [("time() - ai_assistant_backup_last_success_timestamp_seconds", "{{instance}} {{target}}")],
            width=8,
        )
    )
    d.with_panel(
        ts(
            "Scrape targets up",
            "1 = scraped; every job of monitoring/prometheus/prometheus.yml.",
            "short",
            [("sum by (job) (up)", "{{job}}")],
            width=8,
        )
    )
    return d
