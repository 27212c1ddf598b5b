"""The few Kubernetes API calls the service makes, with the identity it runs as."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.types import PatchType
from wallestars_api.resources import AGENTTASKS, GROUP, VERSION

AgentTask = create_namespaced_resource(GROUP, VERSION, "AgentTask", AGENTTASKS)

__all__ = ["AgentTask", "ApiError", "Kube", "make_client"]


def make_client(kubeconfig: Path | None) -> AsyncClient:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(
        config=config, field_manager="wallestars-webhooks", timeout=httpx2.Timeout(10.0)
    )


class Kube:
    """get/patch of agenttasks/status, TokenReview and SubjectAccessReview: nothing else."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.get(AgentTask.Status, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise
        return cast(dict[str, Any], obj.to_dict())  # type: ignore[no-untyped-call]

    async def patch_status(
        self, namespace: str, name: str, resource_version: str, status: Mapping[str, Any]
    ) -> None:
        """A merge patch guarded by resourceVersion: the API server answers 409 on a lost race."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        await self.client.patch(
            AgentTask.Status, name, body, namespace=namespace, patch_type=PatchType.MERGE
        )

    async def review_token(self, token: str) -> tuple[str, list[str], Mapping[str, Any]] | None:
        """(user, groups, extra) if the API server vouches for the bearer token."""
        tr = TokenReview(metadata=ObjectMeta(), spec=TokenReviewSpec(token=token))
        res = await self.client.create(tr)
        st = res.status
        if st is None or not st.authenticated or st.user is None:
            return None
        return st.user.username or "", list(st.user.groups or []), dict(st.user.extra or {})

    async def can_get_task(
        self, user: str, groups: list[str], extra: Mapping[str, Any], namespace: str, name: str
    ) -> bool:
        sar = SubjectAccessReview(
            metadata=ObjectMeta(),
            spec=SubjectAccessReviewSpec(
                user=user,
                groups=groups,
                extra=dict(extra),
                resourceAttributes=ResourceAttributes(
                    group=GROUP, resource=AGENTTASKS, verb="get", namespace=namespace, name=name
                ),
            ),
        )
        res = await self.client.create(sar)
        return bool(res.status and res.status.allowed)

    async def reachable(self) -> bool:
        """True when the API server answers (a 404 for a name that never exists counts)."""
        try:
            await self.client.get(
                AgentTask.Status, "wallestars-readiness-probe", namespace="default"
            )
        except ApiError:
            return True
        except Exception:
            return False
        return True
