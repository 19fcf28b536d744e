"""Invalid configuration fails with one line naming the key, before any resource is declared."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import ConfigError
from tests.infra.harness import Run, config_for, run_program

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown tier", {"tier": "gold"}, "ai-assistant:tier: unknown value 'gold'"),
    ("unknown cloud", {"cloud": "gcp"}, "ai-assistant:cloud: unknown value 'gcp'"),
    ("one zone", {"zones": ["ap-southeast-1a"]}, "ai-assistant:zones: exactly two distinct zones"),
    ("same zone twice", {"zones": ["ap-southeast-1a", "ap-southeast-1a"]}, "ai-assistant:zones: exactly two"),
    ("zone of another region", {"zones": ["ap-southeast-1a", "us-east-1a"]}, "zone 'us-east-1a' is not in region"),
    ("missing zones", {"zones": None}, "ai-assistant:zones: required"),
    ("bad CIDR", {"adminCidrs": ["10.0.0.300/24"]}, "ai-assistant:adminCidrs: '10.0.0.300/24' is not a valid CIDR"),
    ("host bits set", {"adminCidrs": ["198.51.100.7/24"]}, "ai-assistant:adminCidrs: '198.51.100.7/24' is not a valid"),
    ("SSH from the world", {"adminCidrs": ["0.0.0.0/0"]}, "ai-assistant:adminCidrs: '0.0.0.0/0' opens the port"),
    ("IM range is the world", {"imSourceCidrs": ["0.0.0.0/0"]}, "ai-assistant:imSourceCidrs: '0.0.0.0/0' opens"),
    ("not a list", {"adminCidrs": '"198.51.100.0/24"'}, "ai-assistant:adminCidrs: expected a list of CIDRs"),
    ("not JSON", {"adminCidrs": "198.51.100.0/24"}, "ai-assistant:adminCidrs: not valid JSON/YAML"),
    ("same backup region", {"backupRegion": "ap-southeast-1"}, "ai-assistant:backupRegion: must differ"),
    ("bad domain", {"domain": "not a domain"}, "ai-assistant:domain: 'not a domain' is not a DNS name"),
    ("bad colour", {"activeColor": "red"}, "ai-assistant:activeColor: unknown value 'red'"),
    (
        "active colour not deployed",
        {"activeColor": "green", "deployColors": ["blue"]},
        "ai-assistant:activeColor: green has no instances",
    ),
    # Alibaba Cloud's range and its 0: tests/infra/test_failover.py.
    ("standby weight on AWS", {"standbyWeight": 35}, "ai-assistant:standbyWeight: not used on AWS"),
    ("canary with one colour", {"canaryWeight": 10}, "ai-assistant:canaryWeight: needs both colours"),
    ("inference missing", {"inference": None}, "ai-assistant:inference: required"),
    ("inference mode", {"inference": {"mode": "cpu"}}, "ai-assistant:inference.mode: unknown value 'cpu'"),
    ("external without URL", {"inference": {"mode": "external"}}, "ai-assistant:inference.url: an https:// URL"),
    ("plain-HTTP endpoint", {"inference": {"mode": "external", "url": "http://llm"}}, "inference.url: an https://"),
    (
        "credentials in URL",
        {"inference": {"mode": "external", "url": "https://u:p@llm.example.com"}},
        "ai-assistant:inference.url: put credentials in the secret inferenceApiKey",
    ),
    ("SSH without key", {"sshPublicKey": None}, "ai-assistant:sshPublicKey: required when adminCidrs"),
    ("bad key", {"sshPublicKey": "hunter2"}, "ai-assistant:sshPublicKey: not an OpenSSH public key"),
    ("hand-off without SSH", {"adminCidrs": []}, "ai-assistant:handoff: Ansible needs SSH"),
    ("bad bool", {"handoff": "yes"}, "ai-assistant:handoff: 'yes' is not true or false"),
    ("bad receiver", {"alertReceivers": [{"name": "ops"}]}, "ai-assistant:alertReceivers[0]: needs a name and a valid"),
    ("retention zero", {"backupRetentionDays": 0}, "ai-assistant:backupRetentionDays: 0 is out of range"),
    ("no certificate", {"dnsZone": None}, "ai-assistant:certificateId: required"),
    ("image not pinned", {"imageId": None}, "ai-assistant:imageId: required: pin the Debian 12 x86_64 image"),
    ("image not an AMI", {"imageId": "debian-12-amd64"}, "ai-assistant:imageId: 'debian-12-amd64' is not an AMI id"),
    ("Redis CA not PEM", {"redisCaCert": "ApsaraDB-CA-Chain.jks"}, "ai-assistant:redisCaCert: not PEM certificates"),
    ("no Weaviate digest", {"weaviateImageDigest": None}, "ai-assistant:weaviateImageDigest: required, the image's"),
    ("Weaviate tag as digest", {"weaviateImageDigest": "1.28.4"}, "ai-assistant:weaviateImageDigest: required"),
    (
        "no TGI digest",
        {"inference": {"mode": "gpu", "model": {"dir": "m", "sha256": "b" * 64}}},
        "ai-assistant:inference.imageDigest: required, the image's digest sha256:<64 hex digits>",
    ),
    (
        "no model",
        {"inference": {"mode": "gpu", "imageDigest": "sha256:" + "a" * 64}},
        "ai-assistant:inference.model: required with mode gpu",
    ),
    (
        "model dir is a path",
        {
            "inference": {
                "mode": "gpu",
                "imageDigest": "sha256:" + "a" * 64,
                "model": {"dir": "../x", "sha256": "b" * 64},
            }
        },
        "ai-assistant:inference.model.dir: '../x' is not one directory name",
    ),
    (
        "GPU image with external inference",
        {"inference": {"mode": "external", "url": "https://llm.example.com/v1", "imageDigest": "sha256:" + "a" * 64}},
        "ai-assistant:inference.imageDigest: only used with mode gpu",
    ),
    (
        "model checksum",
        {"inference": {"mode": "gpu", "imageDigest": "sha256:" + "a" * 64, "model": {"dir": "m", "sha256": "md5"}}},
        "ai-assistant:inference.model.sha256: 'md5' is not the archive's SHA-256",
    ),
    (
        "Redis CA with a key",
        {"redisCaCert": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
        "ai-assistant:redisCaCert: holds a private key",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_fails_with_one_line_before_any_resource(case: str, overrides: dict[str, Any], message: str) -> None:
    run = Run()
    with pytest.raises(ConfigError) as exc:
        run_program(config_for("aws", "standard", overrides), run=run)
    text = str(exc.value)
    assert message in text, f"{case}: got {text!r}"
    assert "\n" not in text, f"{case}: the message must be one line"
    assert run.resources == [], f"{case}: {len(run.resources)} resources declared before the error"


def test_gpu_needs_the_model_url_secret_and_external_refuses_it() -> None:
    run = Run()
    with pytest.raises(ConfigError, match=r"^ai-assistant:inferenceModelUrl: required with mode gpu \(--secret\)"):
        run_program(config_for("aws", "basic"), secrets={"inferenceModelUrl": None}, run=run)
    assert run.resources == []
    external = {"inference": {"mode": "external", "url": "https://llm.example.com/v1"}}
    with pytest.raises(ConfigError, match=r"^ai-assistant:inferenceModelUrl: only used with inference mode gpu"):
        run_program(config_for("aws", "basic", external), secrets={"inferenceModelUrl": "https://x.example.com/m.tar"})


def test_alicloud_needs_a_certificate_id() -> None:
    with pytest.raises(ConfigError, match=r"ai-assistant:certificateId: required: certificateId \(SSL Certificates"):
        run_program(config_for("alicloud", "basic", certificateId=None))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("debian_12_9_arm64_20G_alibase_20250117.vhd", "is an Arm image; the tiers use x86_64 instance types"),
        ("debian 12/latest", "is not an ECS image id"),
        (None, "ai-assistant:imageId: required"),
    ],
)
def test_alicloud_image_must_be_a_pinned_x86_64_image(image: str | None, message: str) -> None:
    run = Run()
    with pytest.raises(ConfigError, match=message):
        run_program(config_for("alicloud", "basic", imageId=image), run=run)
    assert run.resources == []


def test_invalid_json_is_reported_with_the_key() -> None:
    cfg = config_for("aws", "basic")
    cfg["zones"] = "[not json"
    with pytest.raises(ConfigError, match="ai-assistant:zones: not valid JSON"):
        run_program(cfg)


def test_config_error_is_a_pulumi_run_error() -> None:
    # RunError is what makes `pulumi preview` print the message without a Python traceback.
    import pulumi

    assert issubclass(ConfigError, pulumi.RunError)
