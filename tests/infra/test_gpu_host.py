"""What the stack hands the GPU host and the knowledge base (roles/model_server tgi, roles/weaviate): the images by
digest and the staged model's directory and checksum as plain group variables, the model archive's pre-signed URL
only as a secret of the hand-off command. Under Pulumi mocks (no cloud account here)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.infra.harness import MODEL_URL, config_for, is_secret, run_program, unwrap


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_gpu_host_gets_the_digest_and_the_model_and_the_url_stays_secret(cloud: str) -> None:
    run = run_program(config_for(cloud, "standard"))
    value, secret = run.exports["inventory"]
    assert not secret
    inventory = yaml.safe_load(value) if isinstance(value, str) else value
    groups = inventory["all"]["children"]
    assert groups["inference"]["hosts"], "mode gpu declares a GPU host"
    assert groups["inference"]["vars"] == {
        "model_server_tgi_image_digest": "sha256:" + "a" * 64,
        "model_server_tgi_model_dir": "qwen",
        "model_server_tgi_model_sha256": "b" * 64,
    }
    assert groups["data"]["vars"]["weaviate_image_digest"] == "sha256:" + "c" * 64
    for name, (export, _) in run.exports.items():
        assert MODEL_URL not in json.dumps(unwrap(export), default=str), f"the model URL is in the plain export {name}"
    cmd = run.of("command:local:Command")[0]
    env = cmd.inputs["environment"]
    assert is_secret(env) or is_secret(env["AI_ASSISTANT_SECRET_VARS"])
    secrets = json.loads(unwrap(cmd.inputs["environment"])["AI_ASSISTANT_SECRET_VARS"])
    assert secrets["model_server_tgi_model_url"] == MODEL_URL


def test_external_inference_hands_over_no_model() -> None:
    external = {"inference": {"mode": "external", "url": "https://llm.example.com/v1"}}
    run = run_program(config_for("aws", "basic", external))
    value, _ = run.exports["inventory"]
    inventory = yaml.safe_load(value) if isinstance(value, str) else value
    assert "vars" not in inventory["all"]["children"]["inference"]
    env = json.loads(unwrap(run.of("command:local:Command")[0].inputs["environment"])["AI_ASSISTANT_SECRET_VARS"])
    assert "model_server_tgi_model_url" not in env
