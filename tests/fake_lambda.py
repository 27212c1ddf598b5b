"""A local endpoint speaking enough of the AWS Lambda API for boto3 (Invoke, GetFunction).

Records every Invoke request; answers the first ones from a script of failures
(throttling, server errors) and then accepts (202). An accepted Event invocation may be
handed to a handler (the real template code) in a thread, as Lambda would run it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests import servers

ERRORS = {
    429: "TooManyRequestsException",
    500: "ServiceException",
    502: "EC2UnexpectedException",
    404: "ResourceNotFoundException",
}


@dataclass
class Call:
    function: str
    qualifier: str | None
    invocation_type: str | None
    payload: bytes
    status: int


@dataclass
class FakeLambda:
    script: list[int] = field(default_factory=list)  # statuses to answer before accepting
    state: dict[str, Any] = field(
        default_factory=lambda: {"State": "Active", "LastUpdateStatus": "Successful"}
    )
    handler: Callable[[dict[str, Any]], Any] | None = None
    calls: list[Call] = field(default_factory=list)
    deliveries: int = 1  # how many times an accepted event is handed to the handler
    outcomes: list[Any] = field(default_factory=list)  # what each handler run returned

    @property
    def accepted(self) -> list[Call]:
        return [c for c in self.calls if c.status == 202]

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else 202
        self.calls.append(Call(request.match_info["name"], request.query.get("Qualifier"),
                               request.headers.get("X-Amz-Invocation-Type"), body, status))  # fmt: skip
        if status != 202:
            code = ERRORS.get(status, "ServiceException")
            return web.json_response({"Type": "Service", "message": f"scripted {code}"},
                                     status=status, headers={"x-amzn-ErrorType": code})  # fmt: skip
        if self.handler is not None:
            event = json.loads(body)
            for _ in range(self.deliveries):  # Lambda may deliver one event more than once
                fut = asyncio.get_running_loop().run_in_executor(None, self.handler, event)
                fut.add_done_callback(lambda f: self.outcomes.append(f.result()))
        return web.Response(status=202)

    async def get_function(self, request: web.Request) -> web.Response:
        return web.json_response({"Configuration": {"FunctionName": request.match_info["name"],
                                                    **self.state}})  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{name}/invocations", self.invoke)
        app.router.add_get("/2015-03-31/functions/{name}", self.get_function)
        return app


async def serve(fake: FakeLambda) -> tuple[str, web.AppRunner]:
    return await servers.serve(fake.app())
