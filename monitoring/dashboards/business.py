"""Layer 1, what users get: messages answered, task completion, satisfaction, and the SLOs with their budgets."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gdash

from .common import ASSISTANT, CONNECTOR, base, query_variable, single, ts

UID = "ai-assistant-business"


def build() -> gdash.Dashboard:
    d = (
        base(
            "AI assistant / Business and SLOs",
            UID,
            ["business", "slo"],
            "Usage, task completion and satisfaction per connector; SLO burn rates. Definitions: docs/metrics.md.",
        )
        .with_variable(query_variable("instance", "Instance", "label_values(ai_assistant_build_info, instance)"))
        .with_variable(query_variable("connector", "Connector", "label_values(ai_assistant_answers_total, connector)"))
    )
    d.with_row(gdash.Row("Usage and outcomes"))
    d.with_panel(
        single(
            "Messages finished",
            "Messages that reached an outcome in the time range, all connectors selected.",
            "short",
            f"sum(increase(ai_assistant_answers_total{{{CONNECTOR}}}[$__range]))",
            decimals=0,
        )
    )
    d.with_panel(
        single(
            "Task completion",
            "Answered / (answered + engine_error + dead) over the time range; blocked messages are refused on purpose"
            " and left out (docs/metrics.md).",
            "percentunit",
            f'sum(increase(ai_assistant_answers_total{{{CONNECTOR}, outcome="answered"}}[$__range]))'
            f' / sum(increase(ai_assistant_answers_total{{{CONNECTOR}, outcome!="blocked"}}[$__range]))',
            decimals=1,
        )
    )
    d.with_panel(
        single(
            "Satisfaction",
            "Positive / all feedback (reactions, card buttons) over the time range.",
            "percentunit",
            f'sum(increase(ai_assistant_feedback_total{{{CONNECTOR}, rating="positive"}}[$__range]))'
            f" / sum(increase(ai_assistant_feedback_total{{{CONNECTOR}}}[$__range]))",
            decimals=1,
        )
    )
    d.with_panel(
        single(
            "Feedback given",
            "Answers that got a rating in the time range.",
            "short",
            f"sum(increase(ai_assistant_feedback_total{{{CONNECTOR}}}[$__range]))",
            decimals=0,
        )
    )
    d.with_panel(
        ts(
            "Messages by outcome",
            "answered, blocked (sensitive-word filter), engine_error (apology sent), dead (gave up).",
            "reqps",
            [(f"sum by (outcome) (rate(ai_assistant_answers_total{{{CONNECTOR}}}[$__rate_interval]))", "{{outcome}}")],
            stacked=True,
        )
    )
    d.with_panel(
        ts(
            "Messages by connector",
            "Which IM platforms the traffic comes from.",
            "reqps",
            [
                (
                    f"sum by (connector) (rate(ai_assistant_answers_total{{{CONNECTOR}}}[$__rate_interval]))",
                    "{{connector}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Task completion by connector (1h)",
            "Recorded by connector:ai_assistant_task_completion:ratio_rate1h.",
            "percentunit",
            [('connector:ai_assistant_task_completion:ratio_rate1h{connector=~"$connector"}', "{{connector}}")],
        )
    )
    d.with_panel(
        ts(
            "Satisfaction by connector (1d)",
            "Recorded by connector:ai_assistant_feedback_positive:ratio_rate1d.",
            "percentunit",
            [('connector:ai_assistant_feedback_positive:ratio_rate1d{connector=~"$connector"}', "{{connector}}")],
        )
    )
    d.with_row(gdash.Row("SLOs (objectives in monitoring/config.yml)"))
    for slo, title in (
        ("availability", "Availability"),
        ("ack_latency", "Ack latency"),
        ("answer_latency", "Answer latency"),
    ):
        d.with_panel(
            single(
                f"{title}: good events, 1d",
                f"1 - slo:sli_error:ratio_rate1d for the {slo} SLO; compare with slo:objective:ratio.",
                "percentunit",
                f'1 - slo:sli_error:ratio_rate1d{{slo="{slo}"}}',
                width=8,
                decimals=3,
            )
        )
    d.with_panel(
        ts(
            "Burn rate over 1h (page at 14.4)",
            "How many times faster than sustainable each SLO spends its 30-day error budget.",
            "short",
            [("slo:sli_error:ratio_rate1h / on (slo) slo:error_budget:ratio", "{{slo}}")],
        )
    )
    d.with_panel(
        ts(
            "Burn rate over 3d (ticket at 1)",
            "Above 1 the budget runs out before the 30 days do.",
            "short",
            [("slo:sli_error:ratio_rate3d / on (slo) slo:error_budget:ratio", "{{slo}}")],
        )
    )
    d.with_panel(
        ts(
            "Versions running",
            "ai_assistant_build_info by version: a deploy shows as a change here.",
            "short",
            [(f"sum by (version) (ai_assistant_build_info{{{ASSISTANT}}})", "{{version}}")],
            width=24,
        )
    )
    # Last, so that the panel ids above (links such as ?viewPanel=7) stay as they were.
    d.with_row(gdash.Row("Answer cache (answer_cache in assistant.yaml; docs/knowledge.md)"))
    lookups = "ai_assistant_answer_cache_lookups_total"
    d.with_panel(
        ts(
            "Answer cache hit ratio",
            "Hits / (hits + misses) in the connectors that opted in; questions with conversation memory in the prompt"
            " are never looked up and are left out. A drop right after `kb ingest` is expected (the knowledge base's"
            " version is in the key). The doctor's `answer cache` check reads the same counters from the store.",
            "percentunit",
            [
                (
                    f'sum by (connector) (rate({lookups}{{{CONNECTOR}, result="hit"}}[$__rate_interval]))'
                    f' / sum by (connector) (rate({lookups}{{{CONNECTOR}, result=~"hit|miss"}}[$__rate_interval]))',
                    "{{connector}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Answer cache lookups by result",
            "hit, miss, personal (memory in the prompt: not cached), error (the store failed; the engine answered).",
            "reqps",
            [(f"sum by (result) (rate({lookups}{{{CONNECTOR}}}[$__rate_interval]))", "{{result}}")],
            stacked=True,
        )
    )
    return d
