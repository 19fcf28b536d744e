"""Grafana dashboards as code (grafana-foundation-sdk, pinned in monitoring/requirements.txt), one module per layer.

`python -m monitoring.dashboards` writes monitoring/grafana/dashboards/*.json; `--check` fails when they are stale.
"""
