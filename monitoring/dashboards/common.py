"""Shared parts: the datasource variable, selectors (defined once), and small panel builders with our defaults."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import dashboard as mdash

from monitoring.rulegen import JOB_ASSISTANT, JOB_NODE

# Provisioned by monitoring/grafana/provisioning/datasources/prometheus.yml; dashboards use it through `$datasource`
# so that the same JSON works with another Prometheus picked in the UI.
DATASOURCE_UID = "prometheus"
DS = mdash.DataSourceRef(type_val="prometheus", uid="${datasource}")

ASSISTANT = f'job="{JOB_ASSISTANT}", instance=~"$instance"'
CONNECTOR = f'{ASSISTANT}, connector=~"$connector"'
NODE = f'job="{JOB_NODE}", instance=~"$node"'


def datasource_variable() -> gdash.DatasourceVariable:
    return gdash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def query_variable(name: str, label: str, query: str, *, multi: bool = True) -> gdash.QueryVariable:
    return (
        gdash.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .refresh(mdash.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(mdash.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(True)
        .all_value(".*")
    )


def base(title: str, uid: str, tags: list[str], description: str) -> gdash.Dashboard:
    return (
        gdash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["ai-assistant", *tags])
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(mdash.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
    )


def _targets(panel: timeseries.Panel | stat.Panel, queries: list[tuple[str, str]]) -> None:
    for i, (expr, legend) in enumerate(queries):
        panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)))


def ts(
    title: str, description: str, unit: str, queries: list[tuple[str, str]], *, width: int = 12, stacked: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10 if not stacked else 40)
        .line_width(1)
    )
    if unit == "percentunit":
        panel.min(0).max(1)
    _targets(panel, queries)
    return panel


def single(
    title: str, description: str, unit: str, expr: str, *, width: int = 6, decimals: int | None = None
) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).datasource(DS).unit(unit).height(5).span(width)
    if decimals is not None:
        panel.decimals(decimals)
    _targets(panel, [(expr, title)])
    return panel
