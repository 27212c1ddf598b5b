"""Start-to-ready time of the local control plane with a warm binary cache.

    .venv/bin/python bench/cluster_startup.py [--runs 5]

Each run: `up` in a fresh state dir (new etcd data; certificates made on the first run
only, as with `make up`), measured until the node stand-in's Node is Ready; then `down`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import localcluster


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    localcluster.bin_dirs()  # build (or find) the binaries first: not part of the figure
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.runs):
            t0 = time.monotonic()
            localcluster.up(Path(d), ports=localcluster.Ports.free())
            times.append(time.monotonic() - t0)
            t1 = time.monotonic()
            localcluster.down(Path(d))
            print(f"run {i + 1}: ready in {times[-1]:.2f}s, down in {time.monotonic() - t1:.2f}s")
    print(
        f"start-to-ready median {statistics.median(times):.2f}s, max {max(times):.2f}s over {len(times)} runs"
    )


if __name__ == "__main__":
    main()
