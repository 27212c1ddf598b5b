"""A tiny agent for tests: reports progress 20/60/100, uploads itself as an artifact, succeeds.

Uses only the SDK and the environment the operator gives an attempt, as a real agent does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from wallestars_sdk import AgentClient


async def main() -> None:
    async with AgentClient.from_env() as agent:
        for pct in (20, 60, 100):
            await agent.progress(pct)
        art = await agent.upload_artifact("agent.py", Path(__file__), "text/x-python")
        answer = await agent.succeed({"ran": True}, artifacts=[art], logs="done\n")
        print(answer.model_dump_json())


if __name__ == "__main__":
    asyncio.run(main())
