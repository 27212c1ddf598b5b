"""The operator's azure-functions executor against an HTTP trigger served on loopback
(the trigger's contract: POST with x-functions-key, 202 at once; GET healthURL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from wallestars_operator.executors import DispatchError, azure_executor

from tests.servers import serve


@pytest.fixture
async def trigger() -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, Any], dict[str, int]]]:
    seen: list[dict[str, Any]] = []
    answer = {"status": 202, "health": 200}

    async def post(r: web.Request) -> web.Response:
        seen.append({"key": r.headers.get("x-functions-key"), "body": await r.json()})
        return web.Response(status=answer["status"], text="queued")

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=answer["health"])

    app = web.Application()
    app.router.add_post("/api/wallestars", post)
    app.router.add_get("/api/health", health)
    base, runner = await serve(app)
    cloud = {"provider": "azure-functions", "timeoutSeconds": 5,
             "azure": {"functionURL": f"{base}/api/wallestars", "healthURL": f"{base}/api/health",
                       "functionKeySecretRef": {"name": "fn", "key": "key"}}}  # fmt: skip
    yield seen, cloud, answer
    await runner.cleanup()


async def secret(name: str, key: str) -> str | None:
    return "the-function-key" if (name, key) == ("fn", "key") else None


async def test_posts_the_invocation_with_the_function_key(trigger: Any) -> None:
    seen, cloud, _ = trigger
    ex = azure_executor(allow_plain_http=True)  # the loopback trigger speaks plain http
    await ex.invoke(cloud, b'{"attempt": 1}', secret)
    await ex.close()
    assert seen == [{"key": "the-function-key", "body": {"attempt": 1}}]


async def test_a_refusal_is_a_dispatch_error_and_health_follows_the_health_url(
    trigger: Any,
) -> None:
    _, cloud, answer = trigger
    ex = azure_executor(allow_plain_http=True)  # the loopback trigger speaks plain http
    assert await ex.health(cloud, secret) is None
    answer.update(status=500, health=503)
    with pytest.raises(DispatchError, match="HTTP 500: queued"):
        await ex.invoke(cloud, b"{}", secret)
    assert "answered HTTP 503" in (await ex.health(cloud, secret) or "")
    await ex.close()


async def test_a_missing_key_is_refused_before_sending(trigger: Any) -> None:
    seen, cloud, _ = trigger
    cloud["azure"]["functionKeySecretRef"] = {"name": "other", "key": "key"}
    ex = azure_executor(allow_plain_http=True)  # the loopback trigger speaks plain http
    with pytest.raises(DispatchError, match="Secret other has no key key"):
        await ex.invoke(cloud, b"{}", secret)
    await ex.close()
    assert seen == []


async def test_plain_http_is_refused_before_any_secret_or_byte_without_the_dev_setting(
    trigger: Any,
) -> None:
    seen, cloud, _ = trigger
    asked: list[str] = []

    async def spy(name: str, key: str) -> str | None:
        asked.append(name)
        return "the-function-key"

    ex = azure_executor()
    with pytest.raises(
        DispatchError, match=r"spec.cloud.azure.functionURL must be an https:// URL"
    ):
        await ex.invoke(cloud, b"{}", spy)
    assert "healthURL must be an https:// URL" in (await ex.health(cloud, spy) or "")
    await ex.close()
    assert seen == [] and asked == []  # nothing sent, no Secret read


async def test_a_redirect_is_not_followed() -> None:
    """A function URL that redirects could lead the attempt's key and the function key to
    another (plain http) address: a redirect is a refusal, and nothing follows it."""
    hits: list[str] = []

    async def redirect(r: web.Request) -> web.Response:
        hits.append(r.path)
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def elsewhere(r: web.Request) -> web.Response:
        hits.append(r.path)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/api/wallestars", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    base, runner = await serve(app)
    cloud = {"provider": "azure-functions", "timeoutSeconds": 5,
             "azure": {"functionURL": f"{base}/api/wallestars",
                       "functionKeySecretRef": {"name": "fn", "key": "key"}}}  # fmt: skip
    ex = azure_executor(allow_plain_http=True)
    try:
        with pytest.raises(DispatchError, match="HTTP 307"):
            await ex.invoke(cloud, b"{}", secret)
    finally:
        await ex.close()
        await runner.cleanup()
    assert hits == ["/api/wallestars"]
