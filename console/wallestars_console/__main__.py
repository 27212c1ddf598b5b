"""`wallestars-console`: the console and the application API."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import start_http_server
from wallestars_api import logs
from wallestars_api.kubeclient import KubeClient

from wallestars_console.api import make_app
from wallestars_console.apiserver import anonymous_client
from wallestars_console.config import Settings

log = logging.getLogger("wallestars.console")


def main() -> None:
    s = Settings()
    logs.setup(s.log_level)
    client: KubeClient = anonymous_client(s.kubeconfig)
    # Watches hold a connection each for as long as they run: pools of their own, with
    # no limit (live.MAX_FEEDS bounds them), so calls never wait behind them.
    watches = anonymous_client(s.kubeconfig, connections=0)
    # Its own identity, for the shared watches only (live.py); never for a caller's call.
    own = KubeClient.from_env(s.kubeconfig, connections=0) if s.watch_as == "console" else None
    if s.metrics_port:
        start_http_server(s.metrics_port)
    # Open event streams do not hold a stop for a minute (aiohttp's default).
    web.run_app(
        make_app(client, s, own, watches),
        host=s.host,
        port=s.port,
        access_log=None,
        print=None,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    main()
