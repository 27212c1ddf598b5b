"""The webhook service's settings, from WALLESTARS_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLESTARS_", extra="ignore")

    host: str = "0.0.0.0"  # noqa: S104 (a service in a pod listens on its pod IP)
    port: int = 8080
    # One master key per line (whsec_<base64>); the first is current, all are accepted.
    master_keys_file: Path = Path("/etc/wallestars/master-keys/keys")
    # Unset: in-cluster service account, else $KUBECONFIG.
    kubeconfig: Path | None = None

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(10.0, gt=0)
    # Closes idle connections and connections that trickle their request headers.
    keepalive_timeout_seconds: float = Field(5.0, gt=0)
    tolerance_seconds: int = Field(300, ge=1)
    # Per task: a steady rate and a burst, beyond which callbacks get 429.
    task_rate_per_second: float = Field(20.0, gt=0)
    task_burst: int = Field(40, ge=1)
    patch_retries: int = Field(8, ge=1)
    # Under pressure (this many status writes in flight, or a write refused or failed by
    # the API server in the last 10 s), a task's progress reports within this many seconds
    # of its last write share the next write; 0: every report writes at once. Results and
    # terminal states never wait.
    progress_window_seconds: float = Field(2.0, ge=0, le=30)
    progress_coalesce_writes_in_flight: int = Field(8, ge=0)

    artifact_store: Literal["filesystem", "s3"] = "filesystem"
    artifact_dir: Path = Path("/var/lib/wallestars/artifacts")
    max_artifact_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    s3_bucket: str | None = None
    s3_prefix: str = "artifacts/"
    s3_endpoint_url: str | None = None
    # Public base URL of this service, for artifact URIs in status (default: relative).
    public_url: str = ""

    # HTTPS (docs/operator.md, TLS): the serving certificate and key, reloaded when they
    # change; with a client CA, mutual TLS: callbacks and artifact uploads need the
    # attempt's client certificate (wallestars_api/tls.py).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_reload_seconds: float = Field(30.0, gt=0)
    # A second, plain-HTTP listener for /healthz, /readyz and /metrics only (kubelet
    # probes and Prometheus present no client certificate); 0: none.
    ops_port: int = Field(0, ge=0, le=65535)

    readiness_interval_seconds: float = Field(5.0, gt=0)
    log_level: str = "INFO"
