"""python -m node_standin --kubeconfig K --node-name N --root DIR --apiserver-port P ..."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from node_standin.node import Config, amain, json_log_setup, parse_capacity


def main() -> None:
    p = argparse.ArgumentParser(prog="node_standin", description=__doc__)
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--root", type=Path, required=True, help="per-pod volumes and logs go here")
    p.add_argument("--apiserver-port", type=int, required=True)
    p.add_argument("--kubelet-port", type=int, default=10250)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--client-ca", type=Path)
    p.add_argument(
        "--capacity", action="append", default=[], metavar="RESOURCE=QUANTITY",
        help="node capacity to report (default cpu=32, memory=128Gi, pods=250)",
    )  # fmt: skip
    p.add_argument(
        "--keep-visible", action="append", default=[], metavar="PATH",
        help="a path kept visible inside pods even under a volume's mountPath (repeatable)",
    )  # fmt: skip
    a = p.parse_args()
    json_log_setup()
    cfg = Config(
        node_name=a.node_name,
        root=a.root,
        apiserver_port=a.apiserver_port,
        kubelet_port=a.kubelet_port,
        capacity=parse_capacity(a.capacity),
        keep_visible=tuple(os.path.realpath(k) for k in a.keep_visible),
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        client_ca=a.client_ca,
    )
    asyncio.run(amain(cfg, a.kubeconfig))


if __name__ == "__main__":
    main()
