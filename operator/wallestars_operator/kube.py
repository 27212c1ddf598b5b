"""The operator's API calls: status patches, attempt objects, Events, leases."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from wallestars_api.events import send_event
from wallestars_api.kubeclient import MERGE_PATCH, ApiError, KubeClient
from wallestars_api.resources import (
    AGENTS,
    AGENTSCHEDULES,
    AGENTTASKS,
    AGENTWORKFLOWS,
    API_VERSION,
)

log = logging.getLogger("wallestars.operator.kube")


def task_path(ns: str, name: str, sub: str = "") -> str:
    return f"/apis/{API_VERSION}/namespaces/{ns}/{AGENTTASKS}/{name}" + (f"/{sub}" if sub else "")


class Kube:
    def __init__(self, client: KubeClient) -> None:
        self.c = client

    async def guarded_status(
        self, plural: str, obj: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge patch of ``obj``'s status guarded by the resourceVersion seen; None if
        someone wrote first (409) or it is gone (404)."""
        meta = obj["metadata"]
        path = f"/apis/{API_VERSION}/namespaces/{meta['namespace']}/{plural}/{meta['name']}/status"
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": dict(status)}
        try:
            return await self.c.request("PATCH", path, body, MERGE_PATCH)
        except ApiError as e:
            if e.code in (404, 409):
                return None
            raise

    async def patch_notifications(
        self, plural: str, ns: str, name: str, records: list[dict[str, Any]]
    ) -> bool:
        """status.notifications alone, unguarded: the notifier is its only writer and
        holds every record it writes; False if the object is gone."""
        path = f"/apis/{API_VERSION}/namespaces/{ns}/{plural}/{name}/status"
        try:
            await self.c.request("PATCH", path, {"status": {"notifications": records}}, MERGE_PATCH)
        except ApiError as e:
            if e.code == 404:
                return False
            raise
        return True

    async def patch_task_status(
        self, obj: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return await self.guarded_status(AGENTTASKS, obj, status)

    async def delete_task(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": meta["uid"]},
            "propagationPolicy": "Background",
        }
        await self._ignore(404, 409)(
            self.c.request("DELETE", task_path(meta["namespace"], meta["name"]), body)
        )

    async def create(self, path: str, obj: Mapping[str, Any]) -> bool:
        """Create; False if it already exists (a deterministic name made by an earlier run)."""
        try:
            await self.c.request("POST", path, obj)
        except ApiError as e:
            if e.code == 409:
                return False
            raise
        return True

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        return await self.create(
            f"/apis/batch/v1/namespaces/{job['metadata']['namespace']}/jobs", job
        )

    async def create_secret(self, secret: Mapping[str, Any]) -> bool:
        return await self.create(
            f"/api/v1/namespaces/{secret['metadata']['namespace']}/secrets", secret
        )

    async def create_task(self, task: Mapping[str, Any]) -> bool:
        """A workflow's step; False if it exists (made by an earlier pass)."""
        ns = task["metadata"]["namespace"]
        return await self.create(f"/apis/{API_VERSION}/namespaces/{ns}/{AGENTTASKS}", task)

    async def patch_workflow_status(
        self, obj: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return await self.guarded_status(AGENTWORKFLOWS, obj, status)

    @staticmethod
    def _collection(kind: str, ns: str) -> str:
        plural = AGENTWORKFLOWS if kind == "AgentWorkflow" else AGENTTASKS
        return f"/apis/{API_VERSION}/namespaces/{ns}/{plural}"

    async def create_run(self, obj: Mapping[str, Any]) -> bool:
        """A schedule's run (an AgentTask or AgentWorkflow); False if it exists already."""
        return await self.create(self._collection(obj["kind"], obj["metadata"]["namespace"]), obj)

    async def cancel(self, kind: str, ns: str, name: str) -> None:
        """spec.cancel: true on an AgentTask or AgentWorkflow (a step, a replaced run)."""
        path = f"{self._collection(kind, ns)}/{name}"
        await self._ignore(404)(
            self.c.request("PATCH", path, {"spec": {"cancel": True}}, MERGE_PATCH)
        )

    async def delete_run(self, kind: str, ns: str, name: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        await self._ignore(404)(
            self.c.request("DELETE", f"{self._collection(kind, ns)}/{name}", body)
        )

    async def patch_schedule_status(
        self, obj: Mapping[str, Any], status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return await self.guarded_status(AGENTSCHEDULES, obj, status)

    async def delete_workflow(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": meta["uid"]},
                "propagationPolicy": "Background"}  # fmt: skip
        path = f"/apis/{API_VERSION}/namespaces/{meta['namespace']}/{AGENTWORKFLOWS}/{meta['name']}"
        await self._ignore(404, 409)(self.c.request("DELETE", path, body))

    async def delete_job(self, ns: str, name: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        await self._ignore(404)(
            self.c.request("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", body)
        )

    async def job_pod(self, ns: str, job: str) -> dict[str, Any] | None:
        """The newest pod of a Job (the Job controller labels its pods job-name=<job>)."""
        out = await self.c.request(
            "GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"job-name={job}"}
        )
        pods = out.get("items") or []
        if not pods:
            return None
        newest: dict[str, Any] = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
        return newest

    async def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
        """A Secret, or None if it does not exist. Only for Secrets an Agent names; the
        caller checks the opt-in label before it uses the data (cloud.Cloud)."""
        try:
            s: dict[str, Any] = await self.c.request(
                "GET", f"/api/v1/namespaces/{ns}/secrets/{name}"
            )
        except ApiError as e:
            if e.code == 404:
                return None
            raise
        return s

    async def secret_metadata(self, ns: str, name: str) -> dict[str, Any] | None:
        """A Secret's metadata only (the API server sends no data), or None if missing:
        how the operator checks the opt-in label of a Secret it only names."""
        try:
            return await self.c.request(
                "GET", f"/api/v1/namespaces/{ns}/secrets/{name}",
                accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )  # fmt: skip
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    async def patch_agent_status(self, ns: str, name: str, status: Mapping[str, Any]) -> None:
        path = f"/apis/{API_VERSION}/namespaces/{ns}/{AGENTS}/{name}/status"
        await self._ignore(404)(
            self.c.request("PATCH", path, {"status": dict(status)}, MERGE_PATCH)
        )

    async def event(
        self, ref: Mapping[str, str], reason: str, message: str, warning: bool = False
    ) -> None:
        """A Kubernetes Event on the object ``ref`` names (events.reference)."""
        await send_event(self.c, "operator", ref, reason, message, warning)

    @staticmethod
    def _ignore(*codes: int) -> Any:
        async def run(coro: Any) -> Any:
            try:
                return await coro
            except ApiError as e:
                if e.code in codes:
                    return None
                raise

        return run
