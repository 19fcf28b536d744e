"""Knowledge-base metrics (prometheus-client, default registry; names are part of the monitoring contract)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

KB_QUERIES = Counter(
    "ai_assistant_kb_queries", "Knowledge-base searches, by whether anything passed min_score", ["outcome"]
)  # exposed as ai_assistant_kb_queries_total{outcome="hit|miss"}
KB_RETRIEVAL_DURATION = Histogram(
    "ai_assistant_kb_retrieval_duration_seconds",
    "One knowledge-base search: query embedding plus vector store lookup",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
KB_CHUNKS = Gauge("ai_assistant_kb_chunks", "Chunks in the knowledge base's vector store")

for _outcome in ("hit", "miss"):
    KB_QUERIES.labels(outcome=_outcome)  # both series exist from the start, so rate() works before the first miss
