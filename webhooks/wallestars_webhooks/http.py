"""Reading request bodies safely, and answering errors as JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web


def header_values(request: web.Request) -> Callable[[str], list[str]]:
    """headers.getall that answers [] for an absent header (what the verifier expects)."""
    return lambda name: request.headers.getall(name, [])


def error_body(reason: str, message: str) -> dict[str, Any]:
    return {"acknowledged": False, "error": {"reason": reason, "message": message}}


def error(status: int, reason: str, message: str, **headers: str) -> web.Response:
    """A JSON error answer that says what is wrong; never a bare status."""
    resp = web.json_response(error_body(reason, message), status=status, headers=headers or None)
    if status in (408, 413):
        resp.force_close()  # the rest of the body is never read; the connection cannot be reused
    return resp


class BodyRefused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def check_headers(request: web.Request, limit: int) -> None:
    """Refuse before reading: compressed bodies (415) and declared sizes over the limit (413)."""
    enc = request.headers.getall("Content-Encoding", [])
    if any(e.strip().lower() not in ("", "identity") for e in enc):
        raise BodyRefused(
            error(415, "compressed-body", "compressed bodies are not accepted; send identity")
        )
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefused(error(413, "body-too-large", f"the body is over the {limit}-byte limit"))


async def read_limited(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole body, read in chunks: 413 past ``limit`` bytes, 408 past ``seconds``."""
    check_headers(request, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(
                        error(413, "body-too-large", f"the body is over the {limit}-byte limit")
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefused(
            error(408, "slow-body", f"the body did not arrive within {seconds:.0f}s")
        ) from None
    return b"".join(chunks)
