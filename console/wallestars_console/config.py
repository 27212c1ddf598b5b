"""The console's settings, from WALLESTARS_CONSOLE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLESTARS_CONSOLE_", extra="ignore")

    host: str = "0.0.0.0"  # noqa: S104 (its pod's own address)
    port: int = 8080
    metrics_port: int = 9092  # Prometheus, on its own port (the chart's "metrics")
    # The API server: in a pod, its own (the service account's CA; never its token for
    # the caller's requests); elsewhere a kubeconfig, whose credentials are not used
    # for the callers' requests either.
    kubeconfig: Path | None = None
    # The key that seals sign-in cookies (32+ bytes; the chart makes one and keeps it
    # across upgrades). Unset: a new random key per process (one replica; a restart
    # signs everybody out).
    session_key_file: Path | None = None
    session_max_age_seconds: float = 8 * 3600
    # The webhook service, as the console reaches it, for artifacts (and its CA).
    artifacts_url: str = ""
    artifacts_ca_file: Path | None = None
    # Live updates (live.py): "console" watches each followed namespace once with the
    # console's own read-only identity (in a pod its ServiceAccount; elsewhere the
    # kubeconfig's user) and authorizes every stream as its caller; "caller" makes each
    # caller's feed with that caller's token (the console needs no rights; costs a watch
    # per caller). shared_namespaces limits the first to the namespaces the console may
    # read (empty: all); the others are followed as "caller".
    watch_as: Literal["console", "caller"] = "console"
    shared_namespaces: list[str] = []
    stream_recheck_seconds: float = 60.0
    stream_keepalive_seconds: float = 15.0  # an SSE comment when nothing else was sent
    log_level: str = "INFO"
