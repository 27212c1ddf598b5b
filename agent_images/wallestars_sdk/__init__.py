"""The Wallestars agent SDK: build, sign and send callbacks; upload artifacts."""

from wallestars_sdk.client import AgentClient, AgentConfig, CallbackRejected
from wallestars_sdk.protocol import (
    Artifact,
    CallbackBody,
    CallbackResponse,
    CallbackStatus,
    NextAction,
)

__all__ = [
    "AgentClient",
    "AgentConfig",
    "Artifact",
    "CallbackBody",
    "CallbackRejected",
    "CallbackResponse",
    "CallbackStatus",
    "NextAction",
]
