"""Monitoring as code: rule generator and Grafana dashboards (see docs/monitoring.md)."""
