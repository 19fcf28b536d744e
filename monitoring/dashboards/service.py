"""Layer 2, the assistant and its dependencies: webhook edge, queue, answers, deliveries, engine, knowledge base."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gdash

from monitoring.rulegen import JOB_MODEL_SERVER, JOB_WEAVIATE

from .common import ASSISTANT, CONNECTOR, base, query_variable, ts

UID = "ai-assistant-service"


def _quantiles(metric: str, selector: str, by: str = "") -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    legend = f"{{{{{by}}}}} p" if by else "p"
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{legend}{p}",
        )
        for q, p in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
    ]


def build() -> gdash.Dashboard:
    d = (
        base(
            "AI assistant / Service",
            UID,
            ["service"],
            "Webhook edge, queue, answers, outbound deliveries, inference engine and knowledge base.",
        )
        .with_variable(query_variable("instance", "Instance", "label_values(ai_assistant_build_info, instance)"))
        .with_variable(query_variable("connector", "Connector", "label_values(ai_assistant_answers_total, connector)"))
    )
    d.with_row(gdash.Row("Webhook edge"))
    d.with_panel(
        ts(
            "Webhook requests by status",
            "success = accepted, duplicate or handshake; error = rejected or failed.",
            "reqps",
            [(f"sum by (status) (rate(ai_assistant_request_total{{{ASSISTANT}}}[$__rate_interval]))", "{{status}}")],
        )
    )
    d.with_panel(
        ts(
            "Acknowledgement latency",
            "Time to acknowledge a webhook (the platforms' deadline is 1-5 s).",
            "s",
            _quantiles("ai_assistant_response_time_seconds", ASSISTANT),
        )
    )
    d.with_panel(
        ts(
            "Rejected webhooks by reason",
            "signature: forged or rotated secret; stale: clock skew or replay; malformed; too_large; forbidden.",
            "reqps",
            [
                (
                    "sum by (connector, reason) "
                    f"(rate(ai_assistant_webhook_rejected_total{{{CONNECTOR}}}[$__rate_interval]))",
                    "{{connector}} {{reason}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Duplicates acknowledged",
            "Platform retries and replays that were acknowledged without a second answer.",
            "reqps",
            [
                (
                    f"sum by (connector) (rate(ai_assistant_duplicates_total{{{CONNECTOR}}}[$__rate_interval]))",
                    "{{connector}}",
                )
            ],
        )
    )
    d.with_row(gdash.Row("Queue and answers"))
    d.with_panel(
        ts(
            "Queue depth",
            "Messages waiting for or being answered.",
            "short",
            [(f"ai_assistant_queue_depth{{{ASSISTANT}}}", "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Oldest unanswered message",
            "Alert AIAssistantQueueOldestMessageAge at 5 minutes.",
            "s",
            [(f"ai_assistant_queue_oldest_age_seconds{{{ASSISTANT}}}", "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Queue depth by lane",
            "Text, long generations and media (images, voice) wait in lanes of their own (docs/architecture.md).",
            "short",
            [(f"max by (lane) (ai_assistant_lane_queue_depth{{{ASSISTANT}}})", "{{lane}}")],
        )
    )
    d.with_panel(
        ts(
            "Wait for a worker by lane (p95)",
            "From a message's arrival to its first claim by a worker of its lane.",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (lane, le) "
                    f"(rate(ai_assistant_lane_wait_seconds_bucket{{{ASSISTANT}}}[$__rate_interval])))",
                    "{{lane}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Answer time (received to delivered)",
            "The answer-latency SLO counts answers within 60 s.",
            "s",
            _quantiles("ai_assistant_answer_duration_seconds", CONNECTOR),
        )
    )
    d.with_panel(
        ts(
            "Outbound sends by outcome",
            "Calls to the platforms' send APIs; failures are retried, then end as dead letters.",
            "reqps",
            [
                (
                    "sum by (connector, outcome) "
                    f"(rate(ai_assistant_deliveries_total{{{CONNECTOR}}}[$__rate_interval]))",
                    "{{connector}} {{outcome}}",
                )
            ],
        )
    )
    d.with_row(gdash.Row("Inference engine and knowledge base"))
    d.with_panel(
        ts(
            "Inference time",
            "One call to the model server, retries included.",
            "s",
            _quantiles("ai_assistant_engine_request_duration_seconds", ASSISTANT, by="engine"),
        )
    )
    d.with_panel(
        ts(
            "Inference error ratio",
            "Calls failed after retries / all calls (alert at 5 %).",
            "percentunit",
            [("engine:ai_assistant_engine_errors:ratio_rate5m", "{{engine}}")],
        )
    )
    d.with_panel(
        ts(
            "Knowledge-base queries",
            "hit: at least one chunk retrieved; miss: none.",
            "reqps",
            [
                (
                    f"sum by (outcome) (rate(ai_assistant_kb_queries_total{{{ASSISTANT}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
        )
    )
    d.with_panel(
        ts(
            "Retrieval time",
            "Knowledge-base retrieval (embedding + vector search).",
            "s",
            _quantiles("ai_assistant_kb_retrieval_duration_seconds", ASSISTANT),
        )
    )
    d.with_panel(
        ts(
            "Knowledge-base chunks",
            "Chunks in the knowledge base.",
            "short",
            [(f"ai_assistant_kb_chunks{{{ASSISTANT}}}", "{{instance}}")],
        )
    )
    d.with_panel(
        ts(
            "Model server and Weaviate scraped",
            "1 = the metrics endpoint answers.",
            "short",
            [(f'up{{job=~"{JOB_MODEL_SERVER}|{JOB_WEAVIATE}"}}', "{{job}} {{instance}}")],
        )
    )
    return d
