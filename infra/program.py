"""The composition: config -> cloud resources -> secrets -> inventory -> Ansible hand-off -> exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi

from infra import config as config_mod
from infra.cloudinit import ONBOOT_PREFIX
from infra.config import InfraConfig, traffic_weights
from infra.deployment import WEAVIATE_GRPC, WEAVIATE_HTTP, Deployment
from infra.handoff import AnsibleHandoff
from infra.inventory import inventory_output, known_hosts_output
from infra.secrets import InternalSecrets
from infra.secrets import onboot_secret as onboot_secret_value
from infra.tiers import CATALOGUE

REPO_ROOT = Path(__file__).resolve().parent.parent


def _plain_vars(conf: InfraConfig, dep: Deployment) -> dict[str, Any]:
    """Variables every host gets. No secret here: this dict ends up in the plain `inventory` output."""
    return {
        "ansible_user": config_mod.ADMIN_USER,
        "ansible_become": True,  # the admin user has passwordless sudo (cloud-init); roles need root
        "ai_assistant_cloud": conf.cloud,
        "ai_assistant_tier": conf.tier,
        "ai_assistant_domain": conf.domain,
        "ai_assistant_active_color": conf.active_color,
        "ai_assistant_inference_mode": conf.inference.mode,
        "ai_assistant_inference_url": conf.inference.url or "",
        "ai_assistant_backup_bucket": dep.backup_bucket,
        "ai_assistant_backup_region": conf.region,
        "ai_assistant_backup_replica_bucket": dep.backup_replica_bucket,
        "ai_assistant_backup_retention_days": conf.backup_retention_days,
        # One state for both zones (docs/adr/0034-one-state-across-zones.md): every assistant host, whatever its zone
        # or colour, uses this Redis (managed, standby in the second zone) and this knowledge base (Weaviate on the
        # primary zone's data host; its API key travels as the secret weaviate_api_key).
        "ai_assistant_redis": _redis_vars(conf, dep),
        "ai_assistant_knowledge": _knowledge_vars(conf, dep),
        # With autoscaling, a host a scaling group starts after this run is in no inventory, so no per-host address
        # can admit it: the data and GPU hosts' firewalls admit the subnets the groups start hosts in
        # (playbooks/group_vars/all.yml). Those subnets hold the data and GPU hosts too; the security groups, which
        # admit members of the assistant group only on those ports, keep it to assistant hosts.
        "ai_assistant_autoscaled_cidrs": list(dep.private_cidrs) if conf.autoscaling else [],
        "ai_assistant_egress_ip": dep.egress_ip,
        "ai_assistant_egress_ips": dep.egress_ips,
        # Egress-only (ingress none): no load balancer, so the firewall opens 443 to none of its subnets
        # (docs/adr/0036-egress-only-ingress.md); the roles refuse a load balancer list with firewall_ingress none.
        "firewall_ingress": conf.ingress,
        "firewall_lb_cidrs": dep.public_cidrs if conf.ingress == "public" else [],
        # The load balancer's subnets: nginx takes the client address from its X-Forwarded-For (allowlists, limits).
        "reverse_proxy_real_ip_from": dep.public_cidrs if conf.ingress == "public" else [],
        "firewall_admin_cidrs": dep.public_cidrs,  # SSH arrives from the bastion's subnet
        # The monitoring host's own address, resolved by Ansible from the inventory (security groups hold the rest).
        "firewall_monitoring_cidrs": "{{ groups['monitoring'] | map('extract', hostvars, 'ansible_host')"
        " | map('regex_replace', '$', '/32') | list }}",
        "volumes_data_device": f"/dev/disk/by-label/{config_mod.DATA_LABEL}",
        "volumes_fs_label": config_mod.DATA_LABEL,
        "volumes_mount_point": config_mod.DATA_MOUNT,
        "tls_mode": "internal_ca",  # the LB terminates public TLS; hosts serve the LB with internal certificates
        "tls_domains": [conf.domain],
    }


def _redis_vars(conf: InfraConfig, dep: Deployment) -> dict[str, Any]:
    # The password is not here: it is the secret redis_password. The playbooks use these instead of a data host's
    # Redis (playbooks/group_vars/assistant.yml), and the data play then runs no Redis of its own (site.yml).
    if dep.redis is None:
        return {}
    r = dep.redis
    out: dict[str, Any] = {"host": r.host, "port": r.port, "user": r.user, "tls": r.tls}
    if conf.redis_ca_cert:
        out["ca_cert"] = conf.redis_ca_cert  # the hosts verify the server against it instead of their trust store
    return out


def _knowledge_vars(conf: InfraConfig, dep: Deployment) -> dict[str, Any]:
    # The primary zone's data host serves the knowledge base; after a zone failover, the standby zone's (restored
    # there: docs/runbooks/zone-failover.md).
    zone = conf.zones[1] if conf.failover else conf.zones[0]
    primary = next((h for h in dep.hosts if h.role == "data" and h.zone == zone), None)
    if primary is None:
        return {}
    return {
        "store": "weaviate",
        # The data host's TLS link in front of Weaviate (site.yml's data play), verified against the internal CA.
        "url": pulumi.Output.concat("https://", primary.private_ip, f":{WEAVIATE_HTTP}"),
        "grpc_port": WEAVIATE_GRPC,
        "host": primary.name,
    }


def _group_vars(conf: InfraConfig) -> dict[str, dict[str, Any]]:
    tier = CATALOGUE[conf.tier]
    a, d = tier.assistant.memory_limits_mib, tier.data.memory_limits_mib
    alerts = conf.alerts
    smtp = conf.alert_smtp
    return {
        "assistant": {
            "assistant_memory_max_mib": a["assistant"],
            "reverse_proxy_memory_max_mib": a["nginx"],
            "assistant_worker_concurrency": tier.service_workers,
            "assistant_lane_long_workers": tier.long_workers,
            "assistant_lane_media_workers": tier.media_workers,
            # Connectors without their secrets (imSecrets reaches assistant_connector_secrets as im_secrets).
            "assistant_connectors": {name: dict(opts) for name, opts in conf.connectors.items()},
            "assistant_alerts_connector": alerts.connector if alerts else "",
            "assistant_alerts_chat_id": alerts.chat_id if alerts else "",
        },
        "monitoring": {
            "alertmanager_email_to": [r.email for r in conf.alert_receivers if r.email],
            "alertmanager_fallback_webhook_urls": [r.webhook for r in conf.alert_receivers if r.webhook],
            "alertmanager_watchdog_url": conf.watchdog_url or "",
            "alertmanager_smtp_smarthost": smtp.smarthost if smtp else "",
            "alertmanager_smtp_from": smtp.sender if smtp else "",
            "alertmanager_smtp_auth_username": smtp.username if smtp else "",
            "alertmanager_smtp_require_tls": smtp.require_tls if smtp else True,
        },
        "data": {
            "redis_maxmemory": f"{d['redis']}mb",
            "weaviate_tier": conf.tier,
            # The catalogue is the one source of sizes: override the role's per-tier table with it.
            "weaviate_memory_limits": {
                name: f"{t.data.memory_limits_mib['weaviate']}m" for name, t in CATALOGUE.items()
            },
            "ai_assistant_monitoring_memory_max_mib": d["monitoring"],
            "weaviate_image_digest": conf.weaviate_image_digest,
        },
        **_inference_group_vars(conf),
    }


def _inference_group_vars(conf: InfraConfig) -> dict[str, dict[str, Any]]:
    # The archive's URL is not here: it is the secret model_server_tgi_model_url.
    gpu = conf.inference.gpu
    if gpu is None:
        return {}
    return {
        "inference": {
            "model_server_tgi_image_digest": gpu.image_digest,
            "model_server_tgi_model_dir": gpu.model_dir,
            "model_server_tgi_model_sha256": gpu.model_sha256,
        }
    }


def main(repo_root: Path = REPO_ROOT) -> None:
    stack = pulumi.get_stack()
    conf = config_mod.load()  # raises ConfigError before any resource exists

    if conf.cloud == "aws":
        from infra import aws_stack as cloud_module
    else:
        from infra import alicloud_stack as cloud_module  # type: ignore[no-redef]
    # Secrets first: the managed Redis is created with the generated Redis password.
    secrets = InternalSecrets("internal")
    secret_vars: dict[str, Any] = {
        "im_secrets": conf.im_secrets or {},
        "inference_api_key": conf.inference_api_key or "",
    }
    if conf.alert_smtp_password is not None:
        secret_vars["alertmanager_smtp_password"] = conf.alert_smtp_password
    if conf.inference_model_url is not None:
        secret_vars["model_server_tgi_model_url"] = conf.inference_model_url
    all_secrets = pulumi.Output.all(secrets.ansible_vars(), pulumi.Output.from_input(secret_vars)).apply(
        lambda v: {**v[0], **v[1]}
    )
    # Autoscaled assistant hosts configure themselves on boot (docs/adr/0039): their secret variables and the issuing
    # CA go to the cloud's secret store (Secrets Manager, KMS), read through their instance role (RAM role).
    onboot_secret: pulumi.Output[str] | None = None
    if conf.autoscaling:
        issuing_key, issuing_cert = secrets.issuing_ca(conf.domain)
        onboot_secret = pulumi.Output.secret(
            pulumi.Output.all(all_secrets, issuing_key, issuing_cert).apply(
                lambda a: json.dumps(onboot_secret_value(a[0], a[1], a[2]), sort_keys=True)
            )
        )
    dep = cloud_module.build(conf, stack, secrets.values["redis_password"], onboot_secret)

    # Strict host-key checking when Pulumi knows every key (not for autoscaled hosts, which come and go).
    keys_known = bool(dep.hosts) and all(h.host_key is not None for h in dep.hosts) and dep.bastion_host_key is not None
    inventory = inventory_output(dep.hosts, _plain_vars(conf, dep), dep.bastion_ip, _group_vars(conf), keys_known)
    known_hosts = known_hosts_output(dep.hosts, dep.bastion_ip, dep.bastion_host_key)
    if conf.handoff:
        handoff = AnsibleHandoff(
            "configure",
            repo_root,
            inventory,
            pulumi.Output.secret(all_secrets),
            dep.dynamic_inventory,
            dep.dynamic_hosts,
            depends_on=dep.ready,
            known_hosts=known_hosts,
            onboot=(
                pulumi.Output.all(dep.backup_bucket).apply(
                    lambda b: {
                        "bucket": b[0],
                        "prefix": ONBOOT_PREFIX,
                        "region": conf.region,
                        # Absent means aws (infra.handoff reads it so): the AWS hand-off's environment stays as it was.
                        **({"cloud": conf.cloud} if conf.cloud != "aws" else {}),
                    }
                )
                if onboot_secret is not None
                else None
            ),
        )
        pulumi.export("handoffTriggers", handoff.triggers)

    weights = traffic_weights(conf)
    pulumi.export("cloud", conf.cloud)
    pulumi.export("tier", conf.tier)
    pulumi.export("ingress", conf.ingress)
    if dep.lb_address is not None:
        # Egress-only stacks have neither: the connectors reach their platforms, nothing reaches the stack.
        pulumi.export("url", f"https://{conf.domain}/")
        pulumi.export("loadBalancer", dep.lb_address)
    pulumi.export("egressIp", dep.egress_ip)  # the primary zone's; kept for scripts that read one address
    pulumi.export("egressIps", dep.egress_ips)  # every zone's NAT address: allow-list all of them
    pulumi.export("bastionIp", dep.bastion_ip)
    pulumi.export("activeColor", conf.active_color)
    pulumi.export("trafficWeights", {f"{c}/{conf.zones[z]}": w for (c, z), w in weights.items()})
    pulumi.export("backupBucket", dep.backup_bucket)
    pulumi.export("backupReplicaBucket", dep.backup_replica_bucket)
    pulumi.export("inventory", inventory)
    pulumi.export("knownHosts", known_hosts)  # public host keys: `pulumi stack output knownHosts > known_hosts`
    if dep.dynamic_inventory is not None:
        pulumi.export("dynamicInventory", dep.dynamic_inventory)
    pulumi.export("hosts", [h.name for h in dep.hosts])
    pulumi.export("internalCaCert", secrets.ca_cert_pem)
    # Operators need these to log in; `pulumi stack output --show-secrets` reveals them, plain output never does.
    pulumi.export("adminToken", secrets.values["assistant_admin_token"])
    pulumi.export("grafanaAdminPassword", secrets.values["grafana_admin_password"])
