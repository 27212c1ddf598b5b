"""An agent that does no browser work, for the Job benchmark: it says when its process
started and when it sent its final callback, then succeeds through the SDK."""

import time

STARTED = time.time()  # before any import: the moment the process began running Python

import asyncio  # noqa: E402

from wallestars_sdk import AgentClient  # noqa: E402


async def main() -> None:
    async with AgentClient.from_env() as agent:
        await agent.succeed({"startedAt": STARTED, "callbackSentAt": time.time()})


if __name__ == "__main__":
    asyncio.run(main())
