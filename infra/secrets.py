"""Internal secrets generated per install (issue 9): none has a default, all are Pulumi secrets.

They reach Ansible only through the hand-off command's secret environment (infra/handoff.py), never through the
inventory, a command line or a plain stack output.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_random as random
import pulumi_tls as tls

# Variable names the roles read; tests/infra check that none of the values appears in plain outputs or inputs.
SECRET_VARS = (
    "redis_password",
    "weaviate_api_key",
    "assistant_admin_token",
    "alertmanager_assistant_token",  # the assistant checks the same token (AI_ASSISTANT_ALERTS__TOKEN)
    "grafana_admin_password",
    # restic's repository key (roles/backup): without it the backups cannot be read, so it lives in the stack's
    # encrypted state; docs/runbooks/restore.md says how to read it back for a restore on a fresh host.
    "ai_assistant_backup_restic_password",
)


class InternalSecrets(pulumi.ComponentResource):
    """Passwords, tokens and the internal CA (key + self-signed certificate) for one deployment."""

    values: dict[str, pulumi.Output[str]]
    ca_cert_pem: pulumi.Output[str]
    ca_key_pem: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ai-assistant:security:InternalSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.values = {}
        for var in SECRET_VARS:
            # The Redis password doubles as the managed Redis password: ApsaraDB for Redis takes 8..32 characters of
            # at least three character types, ElastiCache AUTH 16..128 (tests/infra/test_provider_rules.py).
            managed = var == "redis_password"
            pw = random.RandomPassword(
                f"{name}-{var.replace('_', '-')}",
                length=32 if managed else 40,
                # Alphanumeric only: these land in URLs, YAML and HTTP headers without quoting trouble.
                special=False,
                min_upper=1 if managed else None,
                min_lower=1 if managed else None,
                min_numeric=1 if managed else None,
                opts=child,
            )
            self.values[var] = pulumi.Output.secret(pw.result)

        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P384", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            validity_period_hours=24 * 365 * 5,
            early_renewal_hours=24 * 90,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(common_name="ai-assistant internal CA", organization="ai-assistant"),
            opts=child,
        )
        self.ca_cert_pem = ca.cert_pem
        self.ca_key_pem = pulumi.Output.secret(ca_key.private_key_pem)
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, **self.values, "ca_key_pem": self.ca_key_pem})

    def ansible_vars(self) -> pulumi.Output[dict[str, Any]]:
        """All secret variables for the roles, as one secret Output."""
        merged: dict[str, Any] = {
            **self.values,
            "internal_ca_key_pem": self.ca_key_pem,
            "internal_ca_cert_pem": self.ca_cert_pem,
        }
        return pulumi.Output.secret(pulumi.Output.all(**merged))
