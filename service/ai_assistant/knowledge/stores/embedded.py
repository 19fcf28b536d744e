"""The embedded default store: SQLite is the source of truth, usearch is the approximate-nearest-neighbour index.

Why two parts (docs/adr/0061-embedded-vector-store.md): SQLite gives transactions, so replacing a document's chunks is
atomic and nothing is half-written; usearch (HNSW) gives p99 of a few milliseconds at 100k chunks where an exact scan
does not meet the 25 ms goal on a small VM. The index is derived data: every write bumps a generation number inside the
SQLite transaction, the index file records the generation it was saved at, and a mismatch on open (a crash between the
commit and the index save) means the index is rebuilt from the vectors kept in SQLite. Nothing is lost either way.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import StoreError
from ..settings import KnowledgeSettings, VectorDType, VectorStoreSettings
from ._libstdcxx import share_system_libstdcxx
from .base import Chunk, DocumentRecord, Hit, Replacement, Vector, as_matrix, state_dir

# Before usearch loads, or its private libstdc++ and the system's disagree on std::locale and the next C++ library
# to load (onnxruntime, for OCR) segfaults: see _libstdcxx.py.
share_system_libstdcxx()
from usearch.index import Index  # noqa: E402

log = logging.getLogger(__name__)

Keys = npt.NDArray[np.uint64]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL, url TEXT NOT NULL, content_hash TEXT NOT NULL,
    chunks INTEGER NOT NULL, size_bytes INTEGER NOT NULL, ingested_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    position INTEGER NOT NULL, title TEXT NOT NULL, source TEXT NOT NULL, url TEXT NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, content_hash TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


# The shipped HNSW parameters, also for the stores that tests and benchmarks open directly: with 16/128/128 as the
# defaults here a store opened that way was not the one the service runs, and reopening the service's saved
# index (degree 32) rebuilt it at degree 16.
_SHIPPED = VectorStoreSettings()

# A quantised index (f16, i8) ranks by approximate cosines: it is asked for this many times k candidates, which are
# re-scored exactly with the f32 vectors in SQLite. On 20k embedding-like chunks i8 alone missed 9% of the true
# top-10, 4x candidates re-scored 0.03% (docs/benchmarks.md, "Quantised vectors").
_RERANK_FACTOR = 4

# The smallest batch of documents whose chunks are inserted on several threads (see _insert_threads).
_PARALLEL_MIN = 1024

# The search breadth at which a parallel add's vectors are looked for (see _relink_unreachable): a vector that no search
# reaches is not found at any breadth, and a narrow search costs a fraction of the add. At 100k embedding-like chunks
# after a two-thread add of 32.5 s (idle): breadth 10 took 6.5 s and flagged 130 vectors, 16 took 8.2 s and 27, 64
# took 28.5 s and 5; re-adding a vector on one thread costs about 0.6 ms.
_SELF_CHECK_BREADTH = 10

# Rows per batch when the index is rebuilt from SQLite: a million chunks' vectors read at once would need their 1.5 GB
# twice over (rows, then the joined buffer) on top of the index.
_REBUILD_BATCH = 8192


class EmbeddedStore:
    name = "embedded"

    def __init__(
        self,
        directory: Path,
        dim: int,
        model_id: str,
        *,
        connectivity: int = _SHIPPED.connectivity,
        expansion_add: int = _SHIPPED.expansion_add,
        expansion_search: int = _SHIPPED.expansion_search,
        vector_dtype: VectorDType = _SHIPPED.vector_dtype,
    ) -> None:
        self.directory = directory
        self.dim = dim
        self._lock = threading.RLock()
        self._idle_cores = IdleCores()
        self._index_path = directory / "index.usearch"
        self._generation_path = directory / "index.generation"
        self._connectivity, self._expansion_add = connectivity, expansion_add
        self._expansion_search = expansion_search
        self._vector_dtype = vector_dtype
        # Candidates per hit that a quantised index is asked for (the benchmark and a test vary it).
        self.rerank_factor = _RERANK_FACTOR
        self._dirty = False
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)
        db_path = directory / "knowledge.sqlite3"
        try:
            # check_same_thread=False: calls arrive from anyio worker threads; self._lock serialises them.
            self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db_path}: not a usable knowledge store ({exc})") from None
        self._check_model(db_path, dim, model_id)
        self._loaded_generation = -1
        self._index = self._open_index()

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, data_dir: Path, dim: int, model_id: str) -> EmbeddedStore:
        s = settings.store
        return cls(
            state_dir(data_dir),
            dim,
            model_id,
            connectivity=s.connectivity,
            expansion_add=s.expansion_add,
            expansion_search=s.expansion_search,
            vector_dtype=s.vector_dtype,
        )

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_model(self, db_path: Path, dim: int, model_id: str) -> None:
        stored_model, stored_dim = self._meta("model_id"), self._meta("dim")
        if stored_model is None:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('model_id', ?), ('dim', ?)", (model_id, str(dim)))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
        elif stored_model != model_id or stored_dim != str(dim):
            raise StoreError(
                f"{db_path}: built with embedder {stored_model} ({stored_dim}-d) but the configured embedder is "
                f"{model_id} ({dim}-d); vectors of different models cannot be mixed: "
                "move the store away and ingest again"
            )

    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    def _new_index(self) -> Index:
        return Index(
            ndim=self.dim,
            metric="cos",
            dtype=self._vector_dtype,
            connectivity=self._connectivity,
            expansion_add=self._expansion_add,
            expansion_search=self._expansion_search,
        )

    def _saved_generation(self) -> int:
        try:
            return int(self._generation_path.read_text().strip())
        except (OSError, ValueError):
            return -1

    def _open_index(self) -> Index:
        generation = self._generation()
        if self._saved_generation() == generation and self._index_path.exists():
            try:
                index = Index.restore(str(self._index_path))
                if index is not None and index.ndim == self.dim:
                    saved_dtype = index.dtype.name.lower()  # usearch's ScalarKind: F32, F16, I8
                    if index.connectivity == self._connectivity and saved_dtype == self._vector_dtype:
                        # A restored index starts at usearch's breadths, not the saved ones: documents added after a
                        # restart would otherwise be linked with a narrower build search. The stub calls both
                        # read-only.
                        index.expansion_add = self._expansion_add  # type: ignore[misc]
                        index.expansion_search = self._expansion_search  # type: ignore[misc]
                        self._loaded_generation = generation
                        self._dirty = False
                        return index
                    # The graph's degree and the vectors' dtype are fixed when it is built: a store saved at another
                    # `connectivity` (16 before ADR 0063's amendment) would keep that graph, and its recall, at the new
                    # search breadth; one saved at another `vector_dtype` would keep its memory footprint.
                    log.warning(
                        "knowledge index %s was built with connectivity %d, vector_dtype %s; the settings are %d, %s: "
                        "rebuilding from SQLite",
                        self._index_path, index.connectivity, saved_dtype, self._connectivity, self._vector_dtype,
                    )  # fmt: skip
            except (RuntimeError, ValueError) as exc:
                log.warning("knowledge index %s unreadable (%s); rebuilding from SQLite", self._index_path, exc)
        return self._rebuild()

    def _catch_up(self, *, writing: bool) -> None:
        """Another process (`ai-assistant kb ingest` next to the running service) may have written. Readers switch to
        its saved index once it is flushed; a writer must hold the current index before changing it."""
        generation = self._generation()
        if generation == self._loaded_generation:
            return
        if self._saved_generation() == generation or writing:
            self._index = self._open_index()

    def _rebuild(self) -> Index:
        index = self._new_index()
        started = time.perf_counter()
        # Key order is write order, so each document's chunks are a run of rows.
        cursor = self._db.execute("SELECT key, vector, doc_id FROM chunks ORDER BY key")
        while rows := cursor.fetchmany(_REBUILD_BATCH):
            keys = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
            sizes = [len(list(run)) for _, run in itertools.groupby(r[2] for r in rows)]
            _add(index, keys, vectors, sizes, self._idle_cores())
        if len(index):
            log.info("rebuilt knowledge index: %d chunks in %.1f s", len(index), time.perf_counter() - started)
        self._loaded_generation = self._generation()
        self._dirty = True
        return index

    @property
    def expansion_search(self) -> int:
        return self._expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        """HNSW search breadth: higher is slower and finds more of the true nearest neighbours."""
        with self._lock:
            self._expansion_search = value
            self._index.expansion_search = value  # type: ignore[misc]  # writable at runtime, read-only in the stub

    @property
    def index(self) -> Index:
        """The usearch index itself (the benchmark compares it with the full search path)."""
        return self._index

    # -- the VectorStore interface -----------------------------------------------------------------------------
    def get_document(self, doc_id: str) -> DocumentRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else DocumentRecord(*row)

    def list_documents(self) -> list[DocumentRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM documents ORDER BY source").fetchall()
        return [DocumentRecord(*r) for r in rows]

    def replace_document(self, doc: DocumentRecord, chunks: list[Chunk], vectors: Vector) -> None:
        self.replace_documents([Replacement(doc, chunks, vectors)])

    def replace_documents(self, replacements: Sequence[Replacement]) -> None:
        """Several documents in one transaction (the bulk path: `kb ingest` of a folder, an upload of several files),
        then their chunks in one index add, on several threads when the batch is large (`_insert_threads`)."""
        # A doc_id given twice ends as its last version (its first would be deleted inside the transaction, after
        # its keys were taken for the index).
        latest = list({r.record.doc_id: r for r in replacements}.values())
        matrices = [as_matrix(r.vectors, self.dim, r.record.source) for r in latest]
        for r, matrix in zip(latest, matrices, strict=True):
            if len(r.chunks) != len(matrix):
                raise ValueError(f"{r.record.source}: {len(r.chunks)} chunks but {len(matrix)} vectors")
        with self._lock:
            db = self._db
            old_keys: list[int] = []
            new_keys: list[int] = []
            try:
                db.execute("BEGIN IMMEDIATE")
                self._catch_up(writing=True)
                for r, matrix in zip(latest, matrices, strict=True):
                    doc_id = r.record.doc_id
                    old_keys += [row[0] for row in db.execute("SELECT key FROM chunks WHERE doc_id = ?", (doc_id,))]
                    db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                    db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _doc_row(r.record))
                    for chunk, vector in zip(r.chunks, matrix, strict=True):
                        cur = db.execute(
                            "INSERT INTO chunks (doc_id, position, title, source, url, heading, text, content_hash,"
                            " vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (*_chunk_row(chunk), vector.tobytes()),
                        )
                        new_keys.append(cur.lastrowid)  # type: ignore[arg-type]  # an INSERT always sets it
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                generation = self._generation()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            # Only after the commit: a crash here leaves the saved index behind the database, which _open_index
            # detects through the generation number and repairs by rebuilding.
            if old_keys:
                self._index.remove(np.asarray(old_keys, dtype=np.uint64))
            if new_keys:
                vectors = matrices[0] if len(matrices) == 1 else np.vstack(matrices)
                keys = np.asarray(new_keys, dtype=np.uint64)
                _add(self._index, keys, vectors, [len(m) for m in matrices], self._idle_cores())
            self._loaded_generation = generation
            self._dirty = True

    def delete_document(self, doc_id: str) -> bool:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                self._catch_up(writing=True)
                old_keys = [r[0] for r in db.execute("SELECT key FROM chunks WHERE doc_id = ?", (doc_id,))]
                deleted = db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount
                db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                generation = self._generation()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if old_keys:
                self._index.remove(np.asarray(old_keys, dtype=np.uint64))
            self._loaded_generation = generation
            self._dirty = True
        return deleted > 0

    def search(self, vector: Vector, k: int, query_text: str | None = None) -> list[Hit]:
        query = as_matrix(np.asarray(vector, dtype=np.float32).reshape(1, -1), self.dim, "query")[0]
        with self._lock:
            self._catch_up(writing=False)
            if len(self._index) == 0:
                return []
            if self._vector_dtype == "f32":
                matches = self._index.search(query, k)
                keys = [int(key) for key in matches.keys]
                scores = {key: 1.0 - float(dist) for key, dist in zip(keys, matches.distances, strict=True)}
            else:
                scores = self._rescore(query, self._index.search(query, k * self.rerank_factor).keys, k)
            marks = ",".join("?" * len(scores))
            rows = self._db.execute(
                f"SELECT key, doc_id, position, title, source, url, heading, text, content_hash FROM chunks"  # noqa: S608
                f" WHERE key IN ({marks})",
                list(scores),
            ).fetchall()
        hits = [Hit(Chunk(*row[1:]), scores[row[0]]) for row in rows]
        return sorted(hits, key=lambda h: h.score, reverse=True)

    def _rescore(self, query: Vector, candidates: Vector, k: int) -> dict[int, float]:
        """The k best candidates by their exact cosine. A quantised index's cosines are approximate (i8: off by ~0.01,
        enough to reorder near-duplicates); the f32 vectors in SQLite give the scores an f32 index reports. Only the
        winners' rows are read in full afterwards (building 40 chunks to keep 10 cost more than the re-scoring)."""
        keys = [int(key) for key in candidates]
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(f"SELECT key, vector FROM chunks WHERE key IN ({marks})", keys).fetchall()  # noqa: S608
        stored = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), self.dim)
        norms = np.linalg.norm(stored, axis=1) * float(np.linalg.norm(query))
        cosines = (stored @ query) / np.maximum(norms, np.finfo(np.float32).tiny)
        best = np.argsort(-cosines)[:k]
        return {int(rows[i][0]): float(cosines[i]) for i in best}

    def count_chunks(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def version(self) -> int:
        """The generation number: every add, replace or delete bumps it, from any process (the answer cache keys
        on it, so an ingest next to the running service invalidates the answers given before)."""
        with self._lock:
            return self._generation()

    def flush(self) -> None:
        with self._lock:
            # Skip when another process has written since: its own flush owns the newer index.
            if not self._dirty or self._loaded_generation != self._generation():
                return
            generation = self._loaded_generation
            tmp = self._index_path.with_suffix(".tmp")
            self._index.save(str(tmp))
            os.replace(tmp, self._index_path)
            gen_tmp = self._generation_path.with_suffix(".tmp")
            gen_tmp.write_text(str(generation))
            os.replace(gen_tmp, self._generation_path)
            self._dirty = False

    def backup(self, destination: str) -> str:
        """A consistent copy of the SQLite file (SQLite's online backup API); the index is rebuilt from it."""
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / f"knowledge-{time.strftime('%Y%m%dT%H%M%S')}.sqlite3"
        if dest.exists():
            raise StoreError(f"{dest}: already exists; refusing to overwrite a backup")
        with self._lock:
            target = sqlite3.connect(dest)
            try:
                self._db.backup(target)
            finally:
                target.close()
        return str(dest)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.flush()
            finally:
                self._db.close()


def _add(index: Index, keys: Keys, vectors: Vector, sizes: list[int], cores: int) -> None:
    """Add a batch of documents' chunks (`sizes`: chunks per document, in order) to the index, on as many of `cores`
    as `_insert_threads` allows; after a parallel add, vectors that no search reaches are linked again on one thread."""
    threads = _insert_threads(sizes, cores)
    index.add(keys, vectors, threads=threads)
    if threads > 1:
        relinked = _relink_unreachable(index, keys, vectors, threads)
        if relinked:
            log.debug("knowledge index: %d of %d vectors added again on one thread", relinked, len(keys))


def _relink_unreachable(index: Index, keys: Keys, vectors: Vector, threads: int) -> int:
    """usearch's parallel add can leave a vector that no search reaches (unum-cloud/USearch#735, open: a node whose
    upper level is linked while its level 0 is still empty dead-ends another thread's insertion, which is left with one
    link that the neighbour heuristic later drops). Every vector of the batch is searched for, narrowly; one whose own
    key is not among the 10 found is removed and added again on one thread. On tests/knowledge/test_near_duplicates.py's
    corpus, written in one two-thread add, 2 of 60 builds fell to recall@10 0.947 and 0.956 without this and 180 gave
    1.0000 with it (docs/benchmarks.md, "Parallel insert of a batch of documents"). Returns how many it added again."""
    breadth = index.expansion_search
    index.expansion_search = _SELF_CHECK_BREADTH  # type: ignore[misc]  # writable at runtime, read-only in the stub
    try:
        found = np.asarray(index.search(vectors, 10, threads=threads).keys).reshape(len(keys), -1)
    finally:
        index.expansion_search = breadth  # type: ignore[misc]
    missing = ~(found == keys[:, None]).any(axis=1)
    if missing.any():
        index.remove(keys[missing])
        index.add(keys[missing], vectors[missing], threads=1)
    return int(missing.sum())


class IdleCores:
    """The cores this process may run on that other processes left idle since the last call: insert threads for the
    next add. usearch's threads wait for each other's node locks by spinning, so a thread that shares its core with a
    busy process holds up the others: with a VM busy on one of two cores, a build of 100k embedding-like chunks on two
    threads ran at 648 vectors/s and 114 CPU s, on one at 1,416 and 61 (docs/benchmarks.md, "Parallel insert of a
    batch of documents"). Measured from /proc/stat (all cores' busy time, steal included) less this process's own CPU
    time; where /proc/stat cannot be read, every core counts as idle."""

    def __init__(self) -> None:
        # A service pinned to one core gets one insert thread (no sched_getaffinity outside Linux: every core).
        affinity = getattr(os, "sched_getaffinity", None)
        self._cores = len(affinity(0)) if affinity else os.cpu_count() or 1
        self._last = _cpu_seconds()
        self._idle = self._cores

    def __call__(self) -> int:
        now = _cpu_seconds()
        if now is None or self._last is None:
            return self._cores
        wall = now[0] - self._last[0]
        if wall >= 0.1:  # shorter intervals are mostly clock ticks: keep the last answer
            others = (now[1] - self._last[1] - (now[2] - self._last[2])) / wall
            self._idle = max(1, min(self._cores, self._cores - int(others + 0.5)))
            self._last = now
        return self._idle


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(now, seconds all cores were busy, this process's CPU seconds), or None without a readable /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    busy = sum(ticks) - ticks[3] - ticks[4]
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def _insert_threads(sizes: list[int], cores: int) -> int:
    """Insert threads for one index add of documents with these chunk counts, in this order.

    usearch splits an add of n vectors among t threads in contiguous ranges of ceil(n / t) and runs the ranges side by
    side. When no document is longer than a range, a document lies in one range, or at the end of one and the start of
    the next (inserted at opposite ends of the add), so two chunks of one document, often near-duplicates of each other,
    are not linked at the same moment. That matters: members of a tight cluster inserted side by side do not see each
    other while they are linked; on tests/knowledge/test_near_duplicates.py's corpus, one cluster per add on two
    threads, recall@10 was 0.980-1.000 against 1.000 every time on one (docs/benchmarks.md, "Parallel insert of a batch
    of documents"). Below _PARALLEL_MIN vectors a batch stays on one thread: neighbouring documents (versions of one
    policy, ingested side by side) would be a short range apart, and the gain is small there.
    """
    n = sum(sizes)
    if n < _PARALLEL_MIN or not sizes:
        return 1
    longest = max(sizes)
    for threads in range(cores, 1, -1):
        if longest <= -(-n // threads):
            return threads
    return 1


def _doc_row(doc: DocumentRecord) -> tuple[str, str, str, str, str, int, int, float]:
    return (doc.doc_id, doc.title, doc.source, doc.url, doc.content_hash, doc.chunks, doc.size_bytes, doc.ingested_at)


def _chunk_row(chunk: Chunk) -> tuple[str, int, str, str, str, str, str, str]:
    c = chunk
    return (c.doc_id, c.position, c.title, c.source, c.url, c.heading, c.text, c.content_hash)
