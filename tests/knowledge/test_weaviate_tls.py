"""The Weaviate store's TLS: both of its channels (REST through httpx, gRPC) verify the server against
`knowledge.store.ca_file` and nothing else, and every way that goes wrong is one line naming the setting.

Real TLS and real gRPC on loopback, against a stand-in of the part of Weaviate's surface that a connection touches
(tests/knowledge/weaviate_standin.py): no Weaviate server can run here. The data host's link in front of a real
Weaviate is proven in the VM (tests/roles/test_vm_hardening.py, the weaviate link test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_assistant.errors import ConfigError
from ai_assistant.knowledge.errors import StoreError
from ai_assistant.knowledge.stores.weaviate import WeaviateStore
from ai_assistant.settings import Settings, load_settings
from tests.helpers import free_port
from tests.knowledge.weaviate_standin import StandIn
from tests.pki import CA, make_ca, server_cert

KEY = "stand-in-api-key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | CA]:
    d = tmp_path_factory.mktemp("pki")
    internal, other = make_ca(d, "internal CA"), make_ca(d, "other CA")
    crt, key = server_cert(internal, d, dns=None, ip="127.0.0.1")
    (d / "elsewhere").mkdir()
    wrong_name = server_cert(internal, d / "elsewhere", dns=None, ip="10.9.8.7")
    (d / "other").mkdir()
    foreign = server_cert(other, d / "other", dns=None, ip="127.0.0.1")
    return {
        "ca": internal.pem,
        "other_ca": other.pem,
        "crt": crt,
        "key": key,
        "wrong_name_crt": wrong_name[0],
        "wrong_name_key": wrong_name[1],
        "foreign_crt": foreign[0],
        "foreign_key": foreign[1],
    }


def _standin(pki: dict, prefix: str = "") -> Iterator[StandIn]:
    standin = StandIn(KEY, cert=pki[f"{prefix}crt"], key=pki[f"{prefix}key"]).start()
    yield standin
    standin.stop()


@pytest.fixture
def weaviate(pki: dict) -> Iterator[StandIn]:
    yield from _standin(pki)


def _open(standin: StandIn, ca_file: Path | None, grpc_port: int | None = None) -> WeaviateStore:
    return WeaviateStore(
        f"https://127.0.0.1:{standin.http_port}",
        384,
        "test-model",
        api_key=KEY,
        grpc_port=grpc_port or standin.grpc_port,
        ca_file=ca_file,
        timeout=5.0,
    )


def test_both_channels_are_verified_against_the_ca_file_and_carry_the_key(weaviate: StandIn, pki: dict) -> None:
    store = _open(weaviate, pki["ca"])
    try:
        # REST: the version, then the two collections looked up and created; gRPC: the start's probe.
        assert weaviate.seen.http[0] == "GET /v1/meta", weaviate.seen.http
        assert {"GET /v1/schema/Knowledge", "POST /v1/schema", "GET /v1/schema/KnowledgeDocuments"} <= set(
            weaviate.seen.http
        ), weaviate.seen.http
        assert set(weaviate.classes) == {"Knowledge", "KnowledgeDocuments"}
        assert weaviate.seen.grpc == ["Health"], weaviate.seen.grpc
        assert weaviate.seen.refused == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("served", "trusted", "why"),
    [
        ("foreign_", "ca", "unable to get local issuer certificate"),  # signed by another CA
        ("wrong_name_", "ca", "IP address mismatch"),  # the internal CA's, for another host
        ("", None, "the default trust store"),  # no ca_file: the internal CA is trusted nowhere else
        ("", "other_ca", "unable to get local issuer certificate"),
    ],
)
def test_a_certificate_the_ca_file_does_not_vouch_for_stops_the_start_in_one_line(
    pki: dict, served: str, trusted: str | None, why: str
) -> None:
    for standin in _standin(pki, served):
        with pytest.raises(StoreError) as caught:
            _open(standin, pki[trusted] if trusted else None)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"knowledge.store.url https://127.0.0.1:{standin.http_port}: ") and message.endswith(
            "; set knowledge.store.ca_file"
        ), message
        assert "the server's TLS certificate is not trusted by" in message and why in message, message
        # Refused in the handshake: nothing, not even the key, reached the server.
        assert standin.seen.http == [] and standin.seen.grpc == [], standin.seen


def test_the_grpc_channel_is_verified_on_its_own(pki: dict) -> None:
    """REST served with the internal CA's certificate, gRPC with another CA's (two stand-ins): the start's gRPC health
    check fails at once, so a gRPC port fronted by the wrong certificate is found at start, not at the first question
    (whose query the client retries for about a minute)."""
    for rest in _standin(pki):
        for grpc_side in _standin(pki, "foreign_"):
            with pytest.raises(StoreError) as caught:
                _open(rest, pki["ca"], grpc_port=grpc_side.grpc_port)
            message = str(caught.value)
            assert "\n" not in message and message.startswith(
                f"weaviate at https://127.0.0.1:{rest.http_port}: cannot connect (gRPC port {grpc_side.grpc_port}: "
            ), message
            assert "CERTIFICATE_VERIFY_FAILED" in message and message.endswith("check knowledge.store.ca_file)")
            assert grpc_side.seen.grpc == [], "the gRPC request went through a certificate of another CA"


def test_a_wrong_grpc_port_is_named_at_start(weaviate: StandIn, pki: dict) -> None:
    port = free_port()
    with pytest.raises(StoreError) as caught:
        _open(weaviate, pki["ca"], grpc_port=port)
    assert f"cannot connect (gRPC port {port}: " in str(caught.value)
    assert "Connection refused" in str(caught.value), caught.value


def test_a_ca_file_with_a_plain_url_is_refused(pki: dict) -> None:
    with pytest.raises(ConfigError, match=r"knowledge\.store\.ca_file: set, but knowledge\.store\.url is http://"):
        WeaviateStore("http://127.0.0.1:1", 384, "m", ca_file=pki["ca"])


@pytest.mark.parametrize(
    ("content", "why"), [(None, "no such file"), (b"not a certificate\n", "holds no PEM certificate")]
)
def test_a_ca_file_that_cannot_be_used_is_named(tmp_path: Path, content: bytes | None, why: str) -> None:
    ca = tmp_path / "ca.crt"
    if content is not None:
        ca.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        WeaviateStore("https://127.0.0.1:1", 384, "m", ca_file=ca)
    assert str(caught.value) == f"assistant.yaml: knowledge.store.ca_file: {ca}: {why}"


def test_a_relative_ca_file_is_read_from_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "assistant.yaml").write_text(
        "knowledge:\n  store:\n    name: weaviate\n    url: https://10.0.0.5:8082\n    ca_file: internal-ca.crt\n"
    )
    settings = load_settings(tmp_path)
    assert settings.knowledge.store.ca_file == tmp_path / "internal-ca.crt"
    absolute = tmp_path / "elsewhere.crt"
    (tmp_path / "assistant.yaml").write_text(
        f"knowledge:\n  store:\n    name: weaviate\n    url: https://10.0.0.5:8082\n    ca_file: {absolute}\n"
    )
    assert load_settings(tmp_path).knowledge.store.ca_file == absolute


@pytest.mark.parametrize("trusted", ["ca", "other_ca"])
def test_the_doctor_verifies_weaviate_as_the_store_does(weaviate: StandIn, pki: dict, trusted: str) -> None:
    from ai_assistant.doctor.clock import Clocks
    from ai_assistant.doctor.engine import knowledge_check
    from ai_assistant.doctor.report import Status

    settings = Settings(
        knowledge={
            "store": {"name": "weaviate", "url": f"https://127.0.0.1:{weaviate.http_port}", "ca_file": pki[trusted]}
        }
    )
    check = asyncio.run(knowledge_check(settings, Clocks()))
    if trusted == "ca":
        assert check.status is Status.PASS and "ready in" in check.summary, check
        assert weaviate.seen.http == ["GET /v1/.well-known/ready"]
    else:
        assert check.status is Status.FAIL, check
        assert check.summary.startswith(f"Weaviate at https://127.0.0.1:{weaviate.http_port}: the server's TLS ")
        assert f"not trusted by the CA in {pki['other_ca']}" in check.summary and "knowledge.store.ca_file" in (
            check.advice or ""
        ), check
        assert weaviate.seen.http == []
