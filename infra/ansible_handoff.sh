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
printf '%s' "$AI_ASSISTANT_INVENTORY" > "$work/inventory.yml"
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

# The secret vars JSON becomes a vars file; the internal CA goes where the tls role's internal_ca mode looks for it.
mkdir -m 0700 "$work/internal-ca"
"$python" - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
secrets = json.loads(os.environ["AI_ASSISTANT_SECRET_VARS"])
def write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
write(f"{work}/internal-ca/ca.key", secrets.pop("internal_ca_key_pem"))
write(f"{work}/internal-ca/ca.crt", secrets.pop("internal_ca_cert_pem"))
secrets["tls_internal_ca_dir"] = f"{work}/internal-ca"
write(f"{work}/secrets.json", json.dumps(secrets))
PY
unset AI_ASSISTANT_SECRET_VARS

if [ ! -f "$playbook" ]; then
  echo "ansible hand-off: $playbook not found; set handoff: false or add the playbook" >&2
  exit 2
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
