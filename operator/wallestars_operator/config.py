"""The operator's settings, from WALLESTARS_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLESTARS_", extra="ignore")

    # One master key per line; the first derives new attempts' keys (docs/callbacks.md).
    master_keys_file: Path = Path("/etc/wallestars/master-keys/keys")
    kubeconfig: Path | None = None
    # Where agents send callbacks: the webhook service as agents reach it.
    callback_base_url: str = "http://wallestars-webhooks.wallestars-system.svc:8080"
    # Where cloud agents call back from outside the cluster (an Ingress); empty: the same.
    cloud_callback_base_url: str = ""
    # Leader election: only the holder of this Lease acts; other replicas wait.
    lease_namespace: str = "wallestars-system"
    lease_name: str = "wallestars-operator"
    lease_seconds: float = Field(15.0, gt=1)
    identity: str = ""  # default: host name + pid
    # Client-side rate limit on the operator's own API calls (token bucket).
    api_qps: float = Field(50.0, gt=0)
    api_burst: int = Field(100, ge=1)
    # How often the reconcile loop looks at everything even without a change (resync).
    resync_seconds: float = Field(5.0, gt=0)
    # A browser Job that ended without a final callback is given this long for a late one.
    callback_grace_seconds: float = Field(5.0, ge=0)
    job_ttl_seconds: int = Field(600, ge=0)
    # The browser agent image for Agents whose spec.browser.image is empty.
    browser_image: str = "ghcr.io/wallestars/browser-agent:0.1.0"
    # The cluster's pod and service ranges (comma-separated): no browser may reach them,
    # even where they are public addresses.
    deny_cidrs: str = ""
    # Development only: lets http and azure-functions Agents use plain http:// function
    # URLs (every invocation carries an attempt key and the Agent's credentials). Off in
    # the chart; the local tests and the demo turn it on for their loopback functions.
    insecure_development_allow_plain_http: bool = False
    # How long a Secret an Agent names is cached (a rotated one is picked up after this),
    # and how often each cloud Agent's Secrets and function are probed (Healthy).
    secret_cache_seconds: float = Field(30.0, ge=0)
    health_probe_seconds: float = Field(30.0, gt=0)
    # The webhook service's CA certificate (PEM file), passed to every agent to verify
    # the https callback URL by; unset: agents use their system trust store.
    callback_ca_file: Path | None = None
    # Mutual TLS: the client CA's certificate and key; each browser attempt gets a client
    # certificate signed by it (wallestars_api/tls.py).
    client_ca_cert_file: Path | None = None
    client_ca_key_file: Path | None = None
    # Notifications (spec.notify; docs/notifications.md). They leave through smokescreen:
    # private, loopback and link-local addresses are refused unless allowed here
    # (comma-separated CIDRs, and IP or IP:port addresses).
    notify_allow_private_cidrs: str = ""
    notify_allow_private_addresses: str = ""
    notify_resolvers: str = ""  # DNS servers (IP:port) for the proxy; empty: the system's
    notify_max_age_seconds: float = Field(86400.0, gt=0)  # how long a delivery is retried
    notify_timeout_seconds: float = Field(10.0, gt=0)
    # The default sink: every task and workflow of the listed namespaces (all if empty),
    # signed with a Secret in the operator's own namespace (lease_namespace).
    notify_sink_url: str = ""
    notify_sink_secret: str = ""
    notify_sink_secret_key: str = "secret"  # noqa: S105 (the name of a key in that Secret)
    notify_sink_namespaces: str = ""
    notify_sink_phases: str = ""  # phases, comma-separated; empty: the terminal ones
    notify_sink_format: str = "standard"
    metrics_port: int = 9090
    liveness_port: int = 8081
    log_level: str = "INFO"


def csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())
