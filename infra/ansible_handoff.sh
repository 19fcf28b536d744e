#!/usr/bin/env bash
# Run by Pulumi (infra/handoff.py) from the repository root: waits for the hosts, then runs the site playbook.
# Secrets arrive in $AI_ASSISTANT_SECRET_VARS; they go to a 0600 file in a private directory that is removed on exit,
# and Ansible gets only the file's path. Nothing here echoes a value.
set -euo pipefail
umask 077
: "${AI_ASSISTANT_INVENTORY:?the inventory comes from the Pulumi program}"
: "${AI_ASSISTANT_SECRET_VARS:?the secret variables come from the Pulumi program}"
playbook=${AI_ASSISTANT_PLAYBOOK:-playbooks/site.yml}
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
ansible_bin=$(dirname "$python")
[ -x "$ansible_bin/ansible-playbook" ] || ansible_bin=$(dirname "$(command -v ansible-playbook)")

work=$(mktemp -d -t ai-assistant-handoff.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ ! -f "$playbook" ]; then
  echo "ansible hand-off: $playbook not found; set handoff: false or add the playbook" >&2
  exit 2
fi

# infra/handoff.py write_handoff_files: the inventory (with the wheel built from this checkout, or the one in
# $AI_ASSISTANT_WHEEL/$AI_ASSISTANT_WHEELHOUSE), known_hosts from the keys Pulumi knows, the 0600 secret vars file
# and the internal CA where the tls role's internal_ca mode looks for it. The VM harness calls the same function.
"$python" -m infra.handoff write "$work"
unset AI_ASSISTANT_SECRET_VARS
# Autoscaled hosts configure themselves on boot from an artifact in the backup bucket (infra/boot_configure.py):
# published before any host is waited for, so the hosts the groups start from now on find it.
if [ -n "${AI_ASSISTANT_ONBOOT:-}" ]; then
  "$python" -m infra.handoff publish "$work"
fi
inventories=(-i "$work/inventory.yml")
dynamic=
if [ -n "${AI_ASSISTANT_DYNAMIC_INVENTORY:-}" ]; then
  # Each inventory plugin reads only files whose names end the way it expects.
  case "$AI_ASSISTANT_DYNAMIC_INVENTORY" in
    *'"alibaba.alicloud.alicloud_ecs"'*) dynamic="$work/autoscaled.alicloud.yml" ;;
    *) dynamic="$work/autoscaled.aws_ec2.yml" ;;
  esac
  printf '%s' "$AI_ASSISTANT_DYNAMIC_INVENTORY" > "$dynamic"
  inventories+=(-i "$dynamic")
fi

# Scaling groups launch their hosts after the group exists, so the cloud may not list them yet: wait until the
# dynamic source shows as many as the groups' minimum. A source that cannot be read fails here, not silently later.
if [ -n "$dynamic" ] && [ "${AI_ASSISTANT_DYNAMIC_HOSTS:-0}" -gt 0 ]; then
  deadline=$((SECONDS + ${AI_ASSISTANT_DYNAMIC_WAIT_S:-900}))
  while :; do
    found=$(ANSIBLE_INVENTORY_UNPARSED_FAILED=true "$ansible_bin/ansible-inventory" -i "$dynamic" --list \
      | "$python" -c 'import json, sys; print(len(json.load(sys.stdin).get("_meta", {}).get("hostvars", {})))')
    [ "$found" -lt "$AI_ASSISTANT_DYNAMIC_HOSTS" ] || break
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ansible hand-off: the autoscaled inventory lists $found of $AI_ASSISTANT_DYNAMIC_HOSTS hosts" >&2
      exit 3
    fi
    sleep 15
  done
fi

# New hosts take a minute or two to boot and run cloud-init.
"$ansible_bin/ansible" all "${inventories[@]}" -m ansible.builtin.wait_for_connection -a "timeout=900" -o
"$ansible_bin/ansible-playbook" "${inventories[@]}" -e "@$work/secrets.json" "$playbook"
