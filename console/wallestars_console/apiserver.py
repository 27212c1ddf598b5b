"""How the console reaches the API server: the server and its CA only.

Never with credentials of its own: a client certificate in the TLS handshake would
authenticate every request as the console whatever bearer token the caller sent (the
API server tries x509 before tokens), so the connection carries none, and each request
carries its caller's token.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import yaml
from wallestars_api.kubeclient import SA_DIR, KubeClient, in_cluster_server


def anonymous_client(kubeconfig: Path | None, connections: int = 256) -> KubeClient:
    server = in_cluster_server() if kubeconfig is None else None
    if server is not None:
        return KubeClient(server, ssl.create_default_context(cafile=str(SA_DIR / "ca.crt")),
                          connections=connections)  # fmt: skip
    if kubeconfig is None:
        raise SystemExit(
            "not in a pod: set WALLESTARS_CONSOLE_KUBECONFIG (its cluster is used, never its user)"
        )
    server, ctx = cluster_of(yaml.safe_load(kubeconfig.read_text()), kubeconfig.parent)
    return KubeClient(server, ctx, connections=connections)


def cluster_of(cfg: dict[str, Any], base: Path) -> tuple[str, ssl.SSLContext]:
    """The current context's cluster: its server and a context trusting its CA (pure
    but for reading a CA file the kubeconfig names)."""
    current = cfg.get("current-context")
    ctx_entry = next((c for c in cfg.get("contexts") or [] if c.get("name") == current),
                     (cfg.get("contexts") or [{}])[0])  # fmt: skip
    cluster_name = (ctx_entry.get("context") or {}).get("cluster")
    cluster = next((c["cluster"] for c in cfg.get("clusters") or [] if c.get("name") == cluster_name),
                   (cfg.get("clusters") or [{}])[0].get("cluster", {}))  # fmt: skip
    ctx = ssl.create_default_context()
    if cluster.get("certificate-authority-data"):
        ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"])
        ctx.load_verify_locations(cafile=str(ca if ca.is_absolute() else base / ca))
    return str(cluster["server"]), ctx
