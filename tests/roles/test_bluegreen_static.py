"""Blue/green without a VM: the playbooks parse, refuse bad input before they touch the host (run for real against
localhost in check mode: each case stops at its assert, before any change), and the role renders each colour's unit
and nginx's upstream from the colour the host records. The switch itself runs in tests/roles/test_vm_bluegreen.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
    }


def _inventory(tmp_path: Path) -> Path:
    """localhost as the one assistant host, through the local connection and this interpreter."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"assistant": {"hosts": {"localhost": host}}}}}))
    return path


def _playbook(tmp_path: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path)), "--check", playbook, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=600,
    )


@pytest.mark.parametrize("playbook", ["playbooks/deploy.yml", "playbooks/rollback.yml"])
def test_bluegreen_playbooks_pass_the_syntax_check(playbook: str) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", playbook],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


WHEEL = "/nonexistent/ai_assistant-9.9.9-py3-none-any.whl"
BAD_INPUT = {
    "no-wheel": ("playbooks/deploy.yml", [], "assistant_wheel: required: the wheel to deploy"),
    "no-wheelhouse": (
        "playbooks/deploy.yml",
        ["-e", f"assistant_wheel={WHEEL}"],
        "assistant_wheelhouse: required: the directory of dependency wheels",
    ),
    "sqlite-store": (
        "playbooks/deploy.yml",
        ["-e", f"assistant_wheel={WHEEL}", "-e", "assistant_wheelhouse=/tmp", "-e", "assistant_store_backend=sqlite"],
        "assistant_store_backend: blue/green needs redis, not sqlite",
    ),
    "colliding-ports": (
        "playbooks/deploy.yml",
        ["-e", f"assistant_wheel={WHEEL}", "-e", "assistant_wheelhouse=/tmp", "-e", "assistant_green_port=8080"],
        "assistant_green_port and assistant_green_metrics_port: must differ",
    ),
    "pinned-upstream": (
        "playbooks/deploy.yml",
        [
            "-e",
            f"assistant_wheel={WHEEL}",
            "-e",
            "assistant_wheelhouse=/tmp",
            "-e",
            "reverse_proxy_upstream=http://127.0.0.1:9999",
        ],
        "reverse_proxy_upstream: set to http://127.0.0.1:9999 in the inventory",
    ),
    "missing-wheel": (
        "playbooks/deploy.yml",
        ["-e", f"assistant_wheel={WHEEL}", "-e", "assistant_wheelhouse=/tmp"],
        f"assistant_wheel: {WHEEL} is not an ai_assistant wheel",
    ),
    "rollback-without-a-second-colour": (
        "playbooks/rollback.yml",
        [],
        "rollback: localhost has no green colour to go back to",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_before_the_host_changes(tmp_path: Path, case: str) -> None:
    if case == "rollback-without-a-second-colour" and Path("/opt/ai-assistant/venv-green").exists():
        pytest.skip("this machine has a green ai-assistant installation; the case needs a host without one")
    playbook, args, expected = BAD_INPUT[case]
    proc = _playbook(tmp_path, playbook, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case}: the playbook accepted bad input:\n{out[-3000:]}"
    assert expected in " ".join(out.split()), f"{case}:\n{out[-3000:]}"
    assert "Traceback" not in out
    # Stopped at the check: no task reported a change, and the play never reached its block.
    assert "changed=0" in out and "rescued=0" in out, out[-2000:]


RENDER = """
- hosts: assistant
  gather_facts: false
  vars:
    assistant_wheel: /x/ai_assistant-1.2.3-py3-none-any.whl
  tasks:
    - ansible.builtin.setup:
        gather_subset: ["!all", "!min", "local"]
        fact_path: "{{ fact_dir }}"
    - ansible.builtin.import_role:
        name: assistant
        tasks_from: slot_preflight
    - ansible.builtin.template:
        src: "{{ repo }}/roles/assistant/templates/ai-assistant.service.j2"
        dest: "{{ out }}/{{ __assistant_unit }}.service"
        mode: "0644"
      check_mode: false
    - ansible.builtin.copy:
        content: "{{ {'upstream': reverse_proxy_upstream, 'unit': __assistant_unit} | to_json }}"
        dest: "{{ out }}/result.json"
        mode: "0644"
      check_mode: false
"""


def _render(tmp_path: Path, fact: dict[str, str] | None) -> tuple[dict[str, str], Path]:
    facts, out = tmp_path / "facts", tmp_path / "out"
    facts.mkdir()
    out.mkdir()
    if fact is not None:
        (facts / "ai_assistant.fact").write_text(json.dumps(fact))
    # group_vars beside the inventory apply as playbooks/group_vars/ does to site.yml: the upstream's real wiring.
    (tmp_path / "group_vars").symlink_to(REPO / "playbooks" / "group_vars")
    (tmp_path / "render.yml").write_text(RENDER)
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(_inventory(tmp_path)),
            str(tmp_path / "render.yml"),
            "-e",
            json.dumps({"fact_dir": str(facts), "out": str(out), "repo": str(REPO)}),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads((out / "result.json").read_text()), out


def test_a_host_without_a_recorded_colour_serves_blue_as_before(tmp_path: Path) -> None:
    result, out = _render(tmp_path, None)
    assert result == {"upstream": "http://127.0.0.1:8080", "unit": "ai-assistant"}
    unit = (out / "ai-assistant.service").read_text()
    assert "ExecStart=/opt/ai-assistant/venv/bin/ai-assistant serve " in unit
    assert "AI_ASSISTANT_SERVER__" not in unit  # blue reads its ports from assistant.yaml, as before blue/green
    assert "Description=ai-assistant: the enterprise IM assistant\n" in unit


def test_a_host_recorded_green_converges_green_and_nginx_follows(tmp_path: Path) -> None:
    result, out = _render(tmp_path, {"colour": "green", "upstream": "http://127.0.0.1:8081"})
    assert result == {"upstream": "http://127.0.0.1:8081", "unit": "ai-assistant-green"}
    unit = (out / "ai-assistant-green.service").read_text()
    assert "ExecStart=/opt/ai-assistant/venv-green/bin/ai-assistant serve " in unit
    assert "Environment=AI_ASSISTANT_SERVER__PORT=8081\n" in unit
    assert "Environment=AI_ASSISTANT_SERVER__METRICS_PORT=9465\n" in unit
    # One configuration and one data directory for both colours.
    assert "--config-dir /etc/ai-assistant --data-dir /data/state" in unit


NGINX_RENDER = """
- hosts: localhost
  gather_facts: false
  vars:
    reverse_proxy_server_names: [assistant.example.com]
  tasks:
    - ansible.builtin.import_role:
        name: reverse_proxy
        tasks_from: upstream
      when: false  # only its defaults: the switch itself needs nginx
    - ansible.builtin.template:
        src: "{{ repo }}/roles/reverse_proxy/templates/nginx.conf.j2"
        dest: "{{ out }}/nginx-{{ item }}.conf"
        mode: "0644"
      vars:
        reverse_proxy_upstream: http://127.0.0.1:{{ item }}
      loop: [8080, 8081]
"""


def test_the_switch_leaves_nginx_conf_as_the_role_renders_it_for_the_new_colour(tmp_path: Path) -> None:
    """roles/reverse_proxy/tasks/upstream.yml rewrites proxy_pass in place; the result must be what nginx.conf.j2
    renders for the new upstream, or the next site.yml would change nginx.conf back and forth."""
    (tmp_path / "render.yml").write_text(NGINX_RENDER)
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            json.dumps({"out": str(tmp_path), "repo": str(REPO)}),
            str(tmp_path / "render.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    task = yaml.safe_load((REPO / "roles/reverse_proxy/tasks/upstream.yml").read_text())[0]["ansible.builtin.replace"]
    blue, green = (tmp_path / "nginx-8080.conf").read_text(), (tmp_path / "nginx-8081.conf").read_text()
    replacement = task["replace"].replace("{{ reverse_proxy_upstream }}", "http://127.0.0.1:8081")
    switched, n = re.subn(task["regexp"], replacement, blue)
    assert n >= 5, f"only {n} proxy_pass lines matched the switch's pattern"
    assert switched == green
    assert "127.0.0.1:8080" not in switched
