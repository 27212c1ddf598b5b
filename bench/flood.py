"""Another user's flood of LIST requests, for bench/operator_http.py's flood phase.

    python bench/flood.py KUBECONFIG IN_FLIGHT PATH

Keeps IN_FLIGHT GETs of PATH (for example /api/v1/pods) under way, as the kubeconfig's
user (a service account token), reading each answer whole and not parsing it (a real
flood comes from other machines; parsing here would take CPU from the API server's
share of this one). On SIGTERM prints {"lists": n, "codes": {...}, "seconds": s}.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp


async def flood(kubeconfig: Path, in_flight: int, path: str) -> None:
    cfg = json.loads(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    token = cfg["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
    codes: dict[str, int] = {}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    t0 = time.monotonic()
    conn = aiohttp.TCPConnector(ssl=ctx, limit=in_flight)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=conn, headers=headers) as s:

        async def loop() -> None:
            while not stop.is_set():
                try:
                    async with s.get(cluster["server"] + path) as r:
                        await r.read()
                        codes[str(r.status)] = codes.get(str(r.status), 0) + 1
                        if r.status == 429:
                            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                except aiohttp.ClientError:
                    codes["error"] = codes.get("error", 0) + 1
                    await asyncio.sleep(0.1)

        workers = [asyncio.create_task(loop()) for _ in range(in_flight)]
        await stop.wait()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    seconds = time.monotonic() - t0
    print(json.dumps({"lists": sum(codes.values()), "codes": codes, "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    asyncio.run(flood(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
