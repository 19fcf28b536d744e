"""Internal secrets generated per install (issue 9): none has a default, all are Pulumi secrets.

They reach Ansible only through the hand-off command's secret environment (infra/handoff.py), never through the
inventory, a command line or a plain stack output.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
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
        self._name = name
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

    def issuing_ca(self, domain: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The issuing CA autoscaled assistant hosts sign their own certificates with (key, certificate; both PEM).

        Its key is a Pulumi resource (stable across `up`s) and its certificate a pure function of the root and it,
        so a plan shows no change unless one of them changes (docs/adr/0039-autoscaled-hosts-configure-themselves.md).
        """
        key = tls.PrivateKey(
            f"{self._name}-issuing-ca-key",
            algorithm="ECDSA",
            ecdsa_curve="P384",  # the tls role's CA key type: openssl_privatekey would otherwise replace it
            opts=pulumi.ResourceOptions(parent=self),
        )
        cert = pulumi.Output.all(self.ca_key_pem, self.ca_cert_pem, key.private_key_pem).apply(
            lambda a: issuing_ca_cert(a[0], a[1], a[2], domain)
        )
        return pulumi.Output.secret(key.private_key_pem), cert

    def ansible_vars(self) -> pulumi.Output[dict[str, Any]]:
        """All secret variables for the roles, as one secret Output."""
        merged: dict[str, Any] = {
            **self.values,
            "internal_ca_key_pem": self.ca_key_pem,
            "internal_ca_cert_pem": self.ca_cert_pem,
        }
        return pulumi.Output.secret(pulumi.Output.all(**merged))


# Secret variables an assistant host does not need to configure itself: the ROOT key above all (a host that has it
# can sign for every host), and the monitoring host's and the GPU host's secrets.
NOT_FOR_ONBOOT = (
    "internal_ca_key_pem",
    "grafana_admin_password",
    "alertmanager_smtp_password",
    "model_server_tgi_model_url",
)


def onboot_secret(ansible_vars: dict[str, Any], issuing_key_pem: str, issuing_cert_pem: str) -> dict[str, Any]:
    """What the on-boot secret holds: the assistant hosts' secret variables and the issuing CA (infra/boot_configure.py
    reads it through the instance role)."""
    values = {k: v for k, v in ansible_vars.items() if k not in NOT_FOR_ONBOOT}
    return {**values, "issuing_ca_key_pem": issuing_key_pem, "issuing_ca_cert_pem": issuing_cert_pem}


ISSUING_CA_NAME = "ai-assistant issuing CA (assistant hosts)"


def issuing_ca_cert(root_key_pem: str, root_cert_pem: str, issuing_key_pem: str, domain: str) -> str:
    """The issuing CA's certificate, signed by the root: CA with path length 0, limited by critical name constraints
    to the assistant's DNS name (and its subdomains) and to no IP address at all. A stolen assistant host can sign
    for the service's own name only, not for the data or monitoring hosts or any address (RFC 5280 4.2.1.10).

    Deterministic (serial from the inputs, validity from the root, RFC 6979 signature), so the same inputs give the
    same certificate and a `pulumi up` changes nothing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root_key = serialization.load_pem_private_key(root_key_pem.encode(), None)
    root = x509.load_pem_x509_certificate(root_cert_pem.encode())
    key = serialization.load_pem_private_key(issuing_key_pem.encode(), None)
    if not isinstance(root_key, ec.EllipticCurvePrivateKey) or not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the internal CA keys must be EC keys")
    public = key.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(hashlib.sha256(spki + domain.encode()).digest()[:19], "big") | 1
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(domain)],
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ai-assistant"),
                    x509.NameAttribute(NameOID.COMMON_NAME, ISSUING_CA_NAME),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(root.not_valid_before_utc)
        .not_valid_after(min(root.not_valid_after_utc, root.not_valid_before_utc + datetime.timedelta(days=5 * 365)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA384(), ecdsa_deterministic=True)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
