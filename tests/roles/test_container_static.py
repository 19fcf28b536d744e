"""`assistant_install_method: container` and the image archives of weaviate and TGI, without podman: the units and the
colour's ai-assistant command render from the roles' own templates, the wheel method renders as before, and bad input
stops the role (run for real against localhost in check mode) with one line naming the variable, before the host
changes. tests/roles/test_container_podman.py loads archives and runs the rendered command line with podman."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.roles.test_model_server_gpu import _play, _role, _task_states
from tests.roles.test_static import ROLES_DIR, load

IMAGE_ID = "5" * 64
FACTS = {"getent_passwd": {"ai-assistant": ["x", "996", "995", "", "/data/state", "/usr/sbin/nologin"]}}
CONTAINER = {
    "assistant_install_method": "container",
    "assistant_image_id": f"sha256:{IMAGE_ID}",
    "ansible_facts": FACTS,
}


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart as argv: systemd joins backslash-continued lines the way the shell does."""
    lines = unit.replace("\\\n", " ").splitlines()
    return shlex.split(next(line for line in lines if line.startswith("ExecStart="))[len("ExecStart=") :])


def wrapper_argv(script: str) -> list[str]:
    lines = script.replace("\\\n", " ").splitlines()
    return shlex.split(next(line for line in lines if line.startswith("exec "))[len("exec ") :])


def test_container_unit_runs_the_pinned_image_as_the_account_without_privileges() -> None:
    unit = render_assistant("ai-assistant-container.service.j2", {**CONTAINER, "assistant_memory_max_mib": 768})
    argv = exec_start(unit)
    assert argv[:5] == ["/usr/bin/podman", "run", "--rm", "--pull=never", "--network=host"]
    assert "--user=996:995" in argv
    for flag in ("--cap-drop=all", "--security-opt=no-new-privileges", "--read-only", "--no-healthcheck"):
        assert flag in argv, flag
    assert [a for a in argv if a.startswith("--ulimit")] == ["--ulimit=nofile=65536:65536", "--ulimit=nproc=4096:4096"]
    assert "--memory=768m" in argv
    # Data writable, configuration read-only, both at their host paths, so CLI paths mean the same inside and out.
    assert "--volume=/data/state:/data/state" in argv and "--volume=/etc/ai-assistant:/etc/ai-assistant:ro" in argv
    assert "--env-file=/etc/ai-assistant/secrets.env" in argv
    # The image's own AI_ASSISTANT_SERVER__HOST=0.0.0.0 would override assistant.yaml: the role's address wins.
    assert "--env=AI_ASSISTANT_SERVER__HOST=0.0.0.0" in argv
    assert argv[argv.index(IMAGE_ID) :] == [IMAGE_ID, "--config-dir", "/etc/ai-assistant", "--data-dir", "/data/state"]
    assert "--name=ai-assistant" in argv
    assert "ExecStartPre=-/usr/bin/podman rm --force --ignore ai-assistant" in unit
    assert "ExecStop=/usr/bin/podman stop --ignore --time 30 ai-assistant" in unit
    assert "\nUser=" not in unit  # root runs podman; the service inside runs as the account
    # Without the account's ids (no getent) the container runs as nobody, never as root.
    bare = exec_start(render_assistant("ai-assistant-container.service.j2", {**CONTAINER, "ansible_facts": {}}))
    assert "--user=65534:65534" in bare
    assert not any(a.startswith("--memory") for a in bare)  # assistant_memory_max_mib 0: no limit, as with the wheel


def test_green_container_gets_its_own_name_and_ports() -> None:
    extra = {**CONTAINER, "__assistant_target_colour": "green"}
    argv = exec_start(render_assistant("ai-assistant-container.service.j2", extra))
    assert "--name=ai-assistant-green" in argv
    assert "--env=AI_ASSISTANT_SERVER__PORT=8081" in argv and "--env=AI_ASSISTANT_SERVER__METRICS_PORT=9465" in argv
    blue = exec_start(render_assistant("ai-assistant-container.service.j2", CONTAINER))
    assert not any("SERVER__PORT" in a for a in blue)


@pytest.mark.parametrize("colour", ["blue", "green"])
def test_the_colours_command_runs_what_its_unit_runs_with_the_callers_arguments(colour: str) -> None:
    extra = {**CONTAINER, "__assistant_target_colour": colour}
    unit = exec_start(render_assistant("ai-assistant-container.service.j2", extra))
    script = render_assistant("ai-assistant-container.sh.j2", extra)
    assert script.startswith("#!/bin/sh\n")
    argv = wrapper_argv(script)
    # Same podman options as the unit (account, limits, mounts, environment, ports), then the CLI instead of serve.
    name = unit.index("--name=ai-assistant" + ("" if colour == "blue" else "-green"))
    assert argv[:name] == unit[:name]
    assert argv[-4:] == ["--interactive", "--entrypoint=ai-assistant", IMAGE_ID, "$@"]
    assert not any(a.startswith("--name") for a in argv)  # many may run at once (the gate, a backup, an operator)


def test_the_wheel_method_renders_as_before() -> None:
    """The default stays the wheel: its unit, its config check and the gate's account are what they were."""
    unit = render_assistant("ai-assistant.service.j2", {})
    assert "ExecStart=/opt/ai-assistant/venv/bin/ai-assistant serve --config-dir /etc/ai-assistant" in unit
    assert "User=ai-assistant" in unit and "podman" not in unit
    assert load(ROLES_DIR / "assistant" / "defaults/main.yml")["assistant_install_method"] == "wheel"
    template = "{{ __assistant_config_validate }}|{{ __assistant_cli_user }}"
    rendered = _render_string(template, {})
    validate, user = rendered.split("|")
    assert validate == (
        '/opt/ai-assistant/venv/bin/python -c "import sys, yaml; from ai_assistant.settings import Settings; '
        'Settings(**yaml.safe_load(open(sys.argv[1])))" %s'
    )
    assert user == "ai-assistant"
    container_validate, container_user = _render_string(template, CONTAINER).split("|")
    assert container_user == "root"
    argv = shlex.split(container_validate)
    assert argv[:2] == ["/usr/bin/podman", "run"] and "--network=none" in argv and "--cap-drop=all" in argv
    assert "--volume=%s:/check/assistant.yaml:ro" in argv and argv.count("%s") == 0  # exactly one %s, in the volume
    assert container_validate.count("%s") == 1
    assert argv[argv.index(IMAGE_ID) - 1] == "--entrypoint=python" and argv[-1] == "/check/assistant.yaml"


def _trusted(value: Any) -> Any:
    """Role files are trusted templates when Ansible loads them, nested values included (ansible-core 2.19)."""
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def _render_string(source: str, extra: dict[str, Any]) -> str:
    """Text through the assistant role's defaults and vars (the colours' slots, nested, included)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    variables: dict[str, Any] = {"ansible_managed": "Managed by Ansible", "ansible_check_mode": False}
    for rel in ("defaults/main.yml", "vars/main.yml"):
        variables.update(load(ROLES_DIR / "assistant" / rel) or {})
    variables.update(extra)
    templar = Templar(loader=DataLoader(), variables=_trusted(variables))
    return str(templar.template(trust_as_template(source)))


def render_assistant(template: str, extra: dict[str, Any]) -> str:
    return _render_string((ROLES_DIR / "assistant" / "templates" / template).read_text(encoding="utf-8"), extra)


# --- bad input, against localhost in check mode ----------------------------------------------------------------------


def _assistant(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    archive = tmp_path / "ai-assistant.oci.tar"
    archive.write_bytes(b"not really an image, but a file with a checksum")
    return {
        "assistant_redis_password": "r",
        "assistant_install_method": "container",
        "assistant_image_archive": str(archive),
        "assistant_image_archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "assistant_image_id": IMAGE_ID,
        "assistant_install_dir": str(tmp_path / "opt"),
        "assistant_config_dir": str(tmp_path / "etc"),
        "assistant_data_dir": str(tmp_path / "data"),
        **overrides,
    }


BAD_CONTAINER_INPUT = {
    "unknown-method": ({"assistant_install_method": "docker"}, "assistant_install_method"),
    "no-archive": (
        {"assistant_image_archive": ""},
        "assistant_image_archive: required with assistant_install_method container",
    ),
    "archive-not-on-controller": (
        {"assistant_image_archive": "/nonexistent/ai-assistant.oci.tar"},
        "assistant_image_archive: /nonexistent/ai-assistant.oci.tar is not a file on the controller",
    ),
    "bad-sha256": ({"assistant_image_archive_sha256": "abc"}, "assistant_image_archive_sha256: the 64-hex-digit"),
    "bad-image-id": ({"assistant_image_id": "localhost/ai-assistant:0.1.0"}, "assistant_image_id: the 64-hex-digit"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTAINER_INPUT))
def test_bad_container_input_stops_with_one_line_before_the_host_changes(tmp_path: Path, case: str) -> None:
    overrides, message = BAD_CONTAINER_INPUT[case]
    proc = _play(tmp_path, [_role("assistant", _assistant(tmp_path, **overrides))])
    assert proc.returncode != 0
    failed = [line for line in proc.stdout.splitlines() if line.startswith("fatal:")]
    assert failed and message in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Install podman" not in proc.stdout  # stopped in the preflight, before the first task that changes the host


def test_the_wheel_method_without_a_wheel_names_the_variable(tmp_path: Path) -> None:
    proc = _play(tmp_path, [_role("assistant", {"assistant_redis_password": "r"})])
    assert proc.returncode != 0
    assert "assistant_wheel: required with assistant_install_method wheel" in proc.stdout, proc.stdout[-3000:]


def test_the_container_preflight_passes_and_skips_the_wheel_checks(tmp_path: Path) -> None:
    proc = _play(tmp_path, [_role("assistant", _assistant(tmp_path), tasks_from="preflight")])
    assert proc.returncode == 0, proc.stdout[-3000:]
    states = _task_states(proc.stdout)
    assert states["Stop when the image archive is not on the controller"] == "ok"
    assert states["Find the wheel and the wheelhouse on the controller"] == "skipping"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "assistant_image_archive: required with assistant_install_method container"),
        (
            ["-e", "assistant_image_archive=/nonexistent/ai-assistant.oci.tar",
             "-e", f"assistant_image_archive_sha256={'a' * 64}", "-e", f"assistant_image_id={IMAGE_ID}"],
            "assistant_image_archive: /nonexistent/ai-assistant.oci.tar is not a file on the controller",
        ),
    ],
    ids=["no-archive", "archive-not-on-controller"],
)  # fmt: skip
def test_a_container_deploy_needs_no_wheel_and_checks_the_archive_first(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """playbooks/deploy.yml with the container method: no wheel asked for, the image archive checked before the host
    changes (localhost in check mode, as tests/roles/test_bluegreen_static.py runs the wheel's cases)."""
    from tests.roles.test_bluegreen_static import _playbook

    proc = _playbook(tmp_path, "playbooks/deploy.yml", "-e", "assistant_install_method=container", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in " ".join(out.split()), out[-3000:]
    assert "assistant_wheel: required" not in out and "Traceback" not in out
    assert "changed=0" in out and "rescued=0" in out, out[-2000:]
