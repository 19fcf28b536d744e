"""Weaviate through weaviate-client v4: a collection per knowledge base, bring-your-own vectors, hybrid BM25 + vector
search, batch import with error reporting, backups through Weaviate's backup API.

Between hosts Weaviate sits behind the data host's TLS link (roles/link_tls), and the store verifies it against
`knowledge.store.ca_file`, the internal CA, on both of its channels: REST (httpx) and gRPC.

No Weaviate server can be installed on the development machine, so this module is exercised by the same contract
suite as the embedded store only where `WEAVIATE_URL` points at one (tests/knowledge/test_store_contract.py); its
connection (TLS on both channels, the probe at start) against a stand-in of Weaviate's REST and gRPC surface
(tests/knowledge/test_weaviate_tls.py).
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import numpy as np

from ..errors import StoreError
from ..settings import KnowledgeSettings
from .base import Chunk, DocumentRecord, Hit, Vector, as_matrix

_CHUNK_FIELDS = ("doc_id", "position", "title", "source", "url", "heading", "text", "content_hash")
CA_KEY = "knowledge.store.ca_file"


class WeaviateStore:
    name = "weaviate"

    def __init__(
        self,
        url: str,
        dim: int,
        model_id: str,
        *,
        collection: str = "Knowledge",
        api_key: str | None = None,
        grpc_port: int = 50051,
        hybrid_alpha: float = 0.6,
        backup_backend: str = "filesystem",
        timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout
        from weaviate.connect import ConnectionParams

        from ...errors import ConfigError
        from ...settings import ASSISTANT_FILE
        from ...trust import ca_context, untrusted

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"knowledge.store.url: {url!r} is not an http(s) URL")
        secure = parts.scheme == "https"
        if ca_file is not None and not secure:
            # A CA with a plain URL would suggest an encryption that is not there.
            raise ConfigError(ASSISTANT_FILE, CA_KEY, "set, but knowledge.store.url is http://, not https://")
        context = ca_context(ca_file, CA_KEY) if ca_file is not None else None
        self.dim, self.model_id = dim, model_id
        self.collection_name, self.docs_name = collection, f"{collection}Documents"
        self.hybrid_alpha, self.backup_backend = hybrid_alpha, backup_backend
        self._lock = threading.Lock()
        self._client = weaviate.WeaviateClient(
            connection_params=ConnectionParams.from_params(
                http_host=parts.hostname,
                http_port=parts.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=parts.hostname,
                grpc_port=grpc_port,
                grpc_secure=secure,
            ),
            auth_client_secret=Auth.api_key(api_key) if api_key else None,
            additional_config=AdditionalConfig(
                timeout=Timeout(init=timeout, query=timeout, insert=timeout * 6),
                grpc_config=_grpc_trusting(ca_file) if ca_file is not None else None,
            ),
            # The client's own start checks ask pypi.org for its latest version on every connect, from a host whose
            # egress allows no such thing (roles/firewall): they are skipped, and their gRPC health check made below.
            skip_init_checks=True,
        )
        if context is not None:
            _verify_rest_with(self._client, context)
        try:
            self._client.connect()
            # REST is connected; queries and imports go over gRPC, its own port and its own TLS handshake. Its health
            # check (the one of the skipped start checks, one try within the init timeout) finds a wrong port or
            # certificate now rather than at the first question, which would retry for a minute first.
            self._client._connection._ping_grpc("sync")
        except Exception as exc:  # the client raises its own hierarchy plus grpc/httpx errors
            self._client.close()
            why = untrusted(exc, ca_file)
            if why is not None:  # a configuration problem that no retry fixes: say which setting
                raise StoreError(f"knowledge.store.url {url}: {why}; set {CA_KEY}") from None
            raise StoreError(f"weaviate at {url}: cannot connect ({_cause(exc, grpc_port)})") from None
        self.url = url
        try:
            self._ensure_collections()
        except Exception as exc:
            self._client.close()
            raise StoreError(f"weaviate at {url}: {type(exc).__name__}: {_first_line(exc)}") from None

    @classmethod
    def from_settings(cls, settings: KnowledgeSettings, data_dir: Path, dim: int, model_id: str) -> WeaviateStore:
        s = settings.store
        assert s.url is not None  # KnowledgeSettings refuses weaviate without a url
        return cls(
            s.url,
            dim,
            model_id,
            collection=s.collection,
            api_key=s.api_key.get_secret_value() if s.api_key else None,
            grpc_port=s.grpc_port,
            hybrid_alpha=s.hybrid_alpha,
            backup_backend=s.backup_backend,
            timeout=s.timeout_seconds,
            ca_file=s.ca_file,
        )

    def _ensure_collections(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

        collections = self._client.collections
        # Trigram tokenisation: BM25 over Chinese needs no word segmenter module on the server (GSE is opt-in).
        if not collections.exists(self.collection_name):
            collections.create(
                self.collection_name,
                description=f"Knowledge chunks; vectors from {self.model_id} ({self.dim}-d)",
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                ),
                properties=[
                    Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="version", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="position", data_type=DataType.INT),
                    Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.TRIGRAM),
                    Property(name="source", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="url", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="heading", data_type=DataType.TEXT, tokenization=Tokenization.TRIGRAM),
                    Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.TRIGRAM),
                    Property(name="content_hash", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                ],
            )
        if not collections.exists(self.docs_name):
            collections.create(
                self.docs_name,
                description=f"Knowledge documents; model {self.model_id}",
                properties=[
                    Property(name="doc_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="title", data_type=DataType.TEXT),
                    Property(name="source", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="url", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="content_hash", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="model_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="chunks", data_type=DataType.INT),
                    Property(name="size_bytes", data_type=DataType.INT),
                    Property(name="ingested_at", data_type=DataType.NUMBER),
                ],
            )
        self._chunks = collections.get(self.collection_name)
        self._docs = collections.get(self.docs_name)

    @staticmethod
    def _uuid(*parts: str) -> UUID:
        from weaviate.util import generate_uuid5

        return UUID(generate_uuid5(":".join(parts)))

    # -- the VectorStore interface -----------------------------------------------------------------------------
    def get_document(self, doc_id: str) -> DocumentRecord | None:
        obj = self._docs.query.fetch_object_by_id(self._uuid("doc", doc_id))
        return None if obj is None else _doc(obj.properties)

    def list_documents(self) -> list[DocumentRecord]:
        docs = [_doc(obj.properties) for obj in self._docs.iterator()]
        return sorted(docs, key=lambda d: d.source)

    def replace_document(self, doc: DocumentRecord, chunks: list[Chunk], vectors: Vector) -> None:
        from weaviate.classes.query import Filter

        matrix = as_matrix(vectors, self.dim, doc.source)
        version = doc.content_hash[:16]
        with self._lock, self._chunks.batch.fixed_size(batch_size=100, concurrent_requests=2) as batch:
            for chunk, vector in zip(chunks, matrix, strict=True):
                props = {name: getattr(chunk, name) for name in _CHUNK_FIELDS} | {"version": version}
                batch.add_object(
                    properties=props,
                    uuid=self._uuid(doc.doc_id, version, str(chunk.position)),
                    # Configure.Vectors.self_provided() without a name creates the named vector "default".
                    vector={"default": vector.tolist()},
                )
        failed = self._chunks.batch.failed_objects
        if failed:
            # Roll back this version's chunks; the previous version stays searchable.
            self._chunks.data.delete_many(
                where=Filter.by_property("doc_id").equal(doc.doc_id) & Filter.by_property("version").equal(version)
            )
            first = failed[0].message
            raise StoreError(f"weaviate: {len(failed)} of {len(chunks)} chunks of {doc.source} rejected: {first}")
        doc_props: dict[str, Any] = {
            "doc_id": doc.doc_id,
            "title": doc.title,
            "source": doc.source,
            "url": doc.url,
            "content_hash": doc.content_hash,
            "model_id": self.model_id,
            "chunks": doc.chunks,
            "size_bytes": doc.size_bytes,
            "ingested_at": doc.ingested_at,
        }
        uuid = self._uuid("doc", doc.doc_id)
        if self._docs.data.exists(uuid):
            self._docs.data.replace(uuid=uuid, properties=doc_props)
        else:
            self._docs.data.insert(doc_props, uuid=uuid)
        # Old versions go last: a reader may see old and new together for a moment, never neither.
        self._chunks.data.delete_many(
            where=Filter.by_property("doc_id").equal(doc.doc_id) & Filter.by_property("version").not_equal(version)
        )

    def delete_document(self, doc_id: str) -> bool:
        from weaviate.classes.query import Filter

        uuid = self._uuid("doc", doc_id)
        existed = bool(self._docs.data.exists(uuid))
        self._chunks.data.delete_many(where=Filter.by_property("doc_id").equal(doc_id))
        if existed:
            self._docs.data.delete_by_id(uuid)
        return existed

    def search(self, vector: Vector, k: int, query_text: str | None = None) -> list[Hit]:
        from weaviate.classes.query import MetadataQuery

        query = as_matrix(np.asarray(vector, dtype=np.float32).reshape(1, -1), self.dim, "query")[0]
        if query_text:
            result = self._chunks.query.hybrid(
                query=query_text,
                vector=query.tolist(),
                alpha=self.hybrid_alpha,
                limit=k,
                include_vector=True,
                return_metadata=MetadataQuery(score=True),
            )
        else:
            result = self._chunks.query.near_vector(
                near_vector=query.tolist(), limit=k, include_vector=True, return_metadata=MetadataQuery(distance=True)
            )
        hits = []
        for obj in result.objects:
            # Hybrid scores are rank-fused and relative (the best is always 1.0), so the reported score is the
            # cosine of the stored vector: the same scale as the embedded store, so one min_score works for both.
            stored = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            score = float(np.dot(np.asarray(stored, dtype=np.float32), query)) if stored is not None else 0.0
            hits.append(Hit(Chunk(*(obj.properties[name] for name in _CHUNK_FIELDS)), score))  # type: ignore[arg-type]
        return hits

    def count_chunks(self) -> int:
        return int(self._chunks.aggregate.over_all(total_count=True).total_count or 0)

    def flush(self) -> None:
        """Weaviate persists on write; nothing to do."""

    def backup(self, destination: str) -> str:
        from weaviate.backup.backup import BackupStorage

        backup_id = destination or f"knowledge-{time.strftime('%Y%m%dt%H%M%S')}"
        try:
            result = self._client.backup.create(
                backup_id=backup_id,
                backend=BackupStorage(self.backup_backend),
                include_collections=[self.collection_name, self.docs_name],
                wait_for_completion=True,
            )
        except Exception as exc:  # the backup module may be disabled on the server
            raise StoreError(f"weaviate backup {backup_id}: {type(exc).__name__}: {exc}") from None
        status = str(getattr(result, "status", "")).upper()
        if "SUCCESS" not in status:
            detail = getattr(result, "error", "")
            raise StoreError(f"weaviate backup {backup_id}: finished with status {status}: {detail}")
        return f"{self.backup_backend}:{backup_id}"

    def close(self) -> None:
        self._client.close()


def _doc(props: Any) -> DocumentRecord:
    return DocumentRecord(
        str(props["doc_id"]),
        str(props["title"]),
        str(props["source"]),
        str(props.get("url") or ""),
        str(props["content_hash"]),
        int(props["chunks"]),
        int(props["size_bytes"]),
        float(props["ingested_at"]),
    )


def _grpc_trusting(ca_file: Path) -> Any:
    """gRPC channel credentials that trust only `ca_file` (ca_context has read and checked the file already)."""
    import grpc
    from weaviate.classes.init import GrpcConfig

    return GrpcConfig(credentials=grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes()))


def _verify_rest_with(client: Any, context: ssl.SSLContext) -> None:
    """Make the client's REST side (httpx) verify against `context`.

    weaviate-client 4.24 builds its httpx clients itself, with certifi's bundle, and takes another CA only from the
    process-wide SSL_CERT_FILE, which would change the trust of every HTTPS call the service makes (the IM platforms'
    APIs included). So the one connection's client factory is replaced: the same headers and mounts as the library's
    own `_make_client`, plus `verify`. The version is pinned (pyproject.toml), and tests/knowledge/test_weaviate_tls.py
    fails if an upgrade stops this factory from being used (a stand-in signed by a private CA is then refused)."""
    import httpx

    connection = client._connection

    def make_client(colour: str) -> httpx.Client | httpx.AsyncClient:
        factory = httpx.AsyncClient if colour == "async" else httpx.Client
        return factory(
            headers=connection._headers, mounts=connection._make_mounts(colour), trust_env=False, verify=context
        )

    connection._make_client = make_client


def _cause(exc: BaseException, grpc_port: int) -> str:
    """The gRPC failure's own words where there is one (the client's error says only that gRPC is needed)."""
    import grpc

    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, grpc.RpcError) and hasattr(current, "details"):
            details = _first_line(current.details())
            hint = f"; check {CA_KEY}" if "CERTIFICATE_VERIFY_FAILED" in details else ""
            return f"gRPC port {grpc_port}: {details}{hint}"
        current = current.__cause__
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(said: BaseException | str) -> str:
    text = str(said).strip()
    return text.splitlines()[0] if text else "no detail"
