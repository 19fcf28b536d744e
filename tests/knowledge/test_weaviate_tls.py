"""Weaviate's store with knowledge.store.ca_file, as the assistant reaches Weaviate through its TLS front on the
internal link (roles/tls_front, issue 23 item 4).

Weaviate cannot run here: a tiny HTTP server behind a real TLS socket on loopback (tests/service/test_engine_tls.py's,
certificates from `cryptography`) stands in for the front's REST side. What is checked is the client's trust: the REST
client the store's connection makes verifies against the CA file alone (right CA accepted; a wrong CA and another host
name refused); the store's connect stops at the handshake with a wrong CA and gets past it with the right one; a CA
file with a plaintext URL is a configuration error. Weaviate's gRPC side (GrpcConfig credentials from the same CA) is
not exercised: the stand-in serves no gRPC.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import weaviate
from weaviate.connect import ConnectionParams

from ai_assistant.knowledge.errors import StoreError
from ai_assistant.knowledge.stores.weaviate import WeaviateStore, _verify_rest_with
from tests.service.test_engine_tls import _serve
from tests.store.test_redis_tls import CA, make_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CA]:
    d = tmp_path_factory.mktemp("pki")
    return {"right": make_ca(d, "internal test CA"), "wrong": make_ca(d, "some other CA")}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[int]:
    yield from _serve(pki, tmp_path_factory.mktemp("front"), "weaviate.internal", "127.0.0.1")


@pytest.fixture(scope="module")
def other_name(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CA]) -> Iterator[int]:
    yield from _serve(pki, tmp_path_factory.mktemp("other"), "elsewhere.internal", None)


def _rest_get(port: int, ca: Path) -> int:
    client = weaviate.WeaviateClient(
        ConnectionParams.from_params(
            http_host="127.0.0.1", http_port=port, http_secure=True,
            grpc_host="127.0.0.1", grpc_port=port + 1, grpc_secure=True,
        ),
        skip_init_checks=True,
    )  # fmt: skip
    _verify_rest_with(client, ssl.create_default_context(cafile=str(ca)))
    with client._connection._make_client("sync") as http:
        return http.get(f"https://127.0.0.1:{port}/v1/meta").status_code


def test_the_rest_client_trusts_the_ca_file(front: int, pki: dict[str, CA]) -> None:
    assert _rest_get(front, pki["right"].pem) == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _rest_get(front, pki["wrong"].pem)


def test_a_certificate_for_another_host_name_is_refused(other_name: int, pki: dict[str, CA]) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _rest_get(other_name, pki["right"].pem)


def test_the_store_connects_through_the_ca_file(front: int, pki: dict[str, CA]) -> None:
    """The store's own connect: a wrong CA stops it at the TLS handshake; with the right one it gets past TLS to
    Weaviate's HTTP API (which the stand-in does not speak: the client then asks for credentials)."""
    url = f"https://127.0.0.1:{front}"
    with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
        WeaviateStore(url, 4, "m", grpc_port=front + 1, ca_file=pki["wrong"].pem, timeout=5)
    with pytest.raises(StoreError) as past_tls:
        WeaviateStore(url, 4, "m", grpc_port=front + 1, ca_file=pki["right"].pem, timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" not in str(past_tls.value) and "SSL" not in str(past_tls.value)


def test_a_ca_file_needs_an_https_url(pki: dict[str, CA]) -> None:
    with pytest.raises(StoreError, match="not https"):
        WeaviateStore("http://127.0.0.1:1", 4, "m", ca_file=pki["right"].pem)


@pytest.mark.anyio
async def test_doctor_checks_weaviate_with_the_ca_file(front: int, pki: dict[str, CA]) -> None:
    from ai_assistant.doctor.clock import Clocks
    from ai_assistant.doctor.engine import knowledge_check
    from ai_assistant.doctor.report import Status
    from ai_assistant.knowledge.settings import KnowledgeSettings, VectorStoreSettings
    from ai_assistant.settings import Settings

    def settings(ca: Path) -> Settings:
        store = VectorStoreSettings(name="weaviate", url=f"https://127.0.0.1:{front}", ca_file=ca)
        return Settings(knowledge=KnowledgeSettings(store=store))

    assert (await knowledge_check(settings(pki["right"].pem), Clocks())).status is Status.PASS
    refused = await knowledge_check(settings(pki["wrong"].pem), Clocks())
    assert refused.status is Status.FAIL and "CERTIFICATE_VERIFY_FAILED" in refused.summary, refused
