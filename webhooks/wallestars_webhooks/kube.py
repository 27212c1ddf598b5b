"""The few Kubernetes API calls the service makes, with the identity it runs as."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wallestars_api.events import send_event
from wallestars_api.kubeclient import MERGE_PATCH, ApiError, KubeClient
from wallestars_api.resources import AGENTTASKS, API_VERSION, GROUP

__all__ = ["ApiError", "Kube", "make_client"]


def make_client(kubeconfig: Path | None) -> KubeClient:
    return KubeClient.from_env(kubeconfig)


def status_path(namespace: str, name: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/{AGENTTASKS}/{name}/status"


class Kube:
    """get/patch of agenttasks/status, Events, TokenReview and SubjectAccessReview:
    nothing else."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.request("GET", status_path(namespace, name))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    async def patch_status(
        self, namespace: str, name: str, resource_version: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch guarded by resourceVersion: the API server answers 409 on a lost race.

        Returns the object as stored after the patch.
        """
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        return await self.client.request("PATCH", status_path(namespace, name), body, MERGE_PATCH)

    async def event(
        self, ref: Mapping[str, str], reason: str, message: str, warning: bool = False
    ) -> None:
        """An Event announcing a transition this service wrote (wallestars_api.events)."""
        await send_event(self.client, "webhooks", ref, reason, message, warning)

    async def review_token(self, token: str) -> tuple[str, list[str], Mapping[str, Any]] | None:
        """(user, groups, extra) if the API server vouches for the bearer token."""
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        st = (
            await self.client.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", review)
        ).get("status", {})
        user = st.get("user") or {}
        if not st.get("authenticated") or not user:
            return None
        return (
            str(user.get("username", "")),
            list(user.get("groups") or []),
            dict(user.get("extra") or {}),
        )

    async def can_get_task(
        self, user: str, groups: list[str], extra: Mapping[str, Any], namespace: str, name: str
    ) -> bool:
        sar = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "extra": dict(extra),
                "resourceAttributes": {
                    "group": GROUP,
                    "resource": AGENTTASKS,
                    "verb": "get",
                    "namespace": namespace,
                    "name": name,
                },
            },
        }
        res = await self.client.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar
        )
        return bool(res.get("status", {}).get("allowed"))

    async def reachable(self) -> bool:
        """True when the API server answers (a 404 for a name that never exists counts)."""
        try:
            await self.client.request("GET", status_path("default", "wallestars-readiness-probe"))
        except ApiError:
            return True
        except Exception:
            return False
        return True
