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
if [ -n "${AI_ASSISTANT_DYNAMIC_INVENTORY:-}" ]; then
  printf '%s' "$AI_ASSISTANT_DYNAMIC_INVENTORY" > "$work/autoscaled.aws_ec2.yml"
  inventories+=(-i "$work/autoscaled.aws_ec2.yml")
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
# New hosts take a minute or two to boot and run cloud-init.
"$ansible_bin/ansible" all "${inventories[@]}" -m ansible.builtin.wait_for_connection -a "timeout=900" -o
"$ansible_bin/ansible-playbook" "${inventories[@]}" -e "@$work/secrets.json" "$playbook"
