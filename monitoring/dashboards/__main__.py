"""Writes (or with --check, compares) monitoring/grafana/dashboards/<uid>.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from . import business, infrastructure, service

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
LAYERS = (business, service, infrastructure)


def render_all() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, deterministic (keys sorted) so that the committed files diff cleanly."""
    out: dict[str, dict[str, Any]] = {}
    for layer in LAYERS:
        doc = json.loads(json.dumps(layer.build().build(), cls=JSONEncoder, sort_keys=True))
        # Stable panel ids in order of appearance: links such as `?viewPanel=7` keep working across regenerations.
        for i, panel in enumerate(doc["panels"], start=1):
            panel["id"] = i
        out[layer.UID] = doc
    return out


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files in --out are not up to date")
    args = parser.parse_args(argv)
    files = {f"{uid}.json": dumps(doc) for uid, doc in render_all().items()}
    stale = [n for n, text in files.items() if not (args.out / n).is_file() or (args.out / n).read_text() != text]
    if args.check:
        for name in stale:
            print(f"{args.out / name}: out of date; run `python -m monitoring.dashboards`", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
