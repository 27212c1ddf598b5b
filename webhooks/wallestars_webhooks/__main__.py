"""wallestars-webhooks: the callback webhook service (settings from WALLESTARS_* env)."""

from __future__ import annotations

import asyncio

from wallestars_api import logs

from wallestars_webhooks.app import serve
from wallestars_webhooks.config import Settings


def main() -> None:
    s = Settings()
    logs.setup(s.log_level)
    try:  # uvloop's event loop costs less CPU per request than asyncio's own (bench/RESULTS.md)
        import uvloop
    except ImportError:
        asyncio.run(serve(s))
    else:
        uvloop.run(serve(s))


if __name__ == "__main__":
    main()
