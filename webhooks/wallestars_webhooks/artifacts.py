"""Artifacts: PUT by the agent (signed like callbacks), GET by users allowed to read the task.

PUT  /api/artifacts/{namespace}/{name}/{uid}/{attempt}/{artifact}
GET  /api/artifacts/{namespace}/{name}/{uid}/{attempt}/{artifact}   (Authorization: Bearer)
GET  /api/baseline/{namespace}/{name}/{uid}/{attempt}   (signed by that attempt)

Uploads stream to a temporary file while the HMAC and sha256 are computed; the file
is kept only if the signature holds. Downloads need a token that passes TokenReview
and a SubjectAccessReview for ``get`` on that AgentTask. A running attempt may read
the one artifact its own payload names as its baseline (``baseline.artifact``: a task
in its namespace, an artifact name), signed with its callback key; nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from wallestars_api.lifecycle import accepts_evidence
from wallestars_sdk.keys import attempt_keys
from wallestars_sdk.signing import (
    SignatureError,
    any_match,
    parse_standard_headers,
    read_content,
)

from wallestars_webhooks import metrics
from wallestars_webhooks.http import BodyRefused, check_headers, error, header_values
from wallestars_webhooks.kube import ApiError, Kube

log = logging.getLogger("wallestars.webhooks.artifacts")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
UID = re.compile(r"[A-Za-z0-9-]{1,64}")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArtifactRef:
    namespace: str
    name: str
    uid: str
    attempt: int
    artifact: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.uid}/{self.attempt}/{self.artifact}"


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    content_type: str


class Store(Protocol):
    # Whether open() hands out a temporary copy that the caller deletes after serving it.
    temporary_copies: bool

    async def put(self, ref: ArtifactRef, tmp: Path, meta: Stored) -> None: ...
    async def open(self, ref: ArtifactRef) -> tuple[Stored, Path] | None: ...


class FilesystemStore:
    """The embedded default: files on a volume (a PVC in the chart)."""

    temporary_copies = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, ref: ArtifactRef) -> Path:
        return self.root / ref.key

    async def put(self, ref: ArtifactRef, tmp: Path, meta: Stored) -> None:
        dest = self._path(ref)
        dest.parent.mkdir(parents=True, exist_ok=True)
        meta_tmp = dest.with_name(f".{ref.artifact}.meta.tmp")
        meta_tmp.write_text(json.dumps(meta.__dict__))
        os.replace(tmp, dest)
        os.replace(meta_tmp, dest.with_name(f".{ref.artifact}.meta"))

    async def open(self, ref: ArtifactRef) -> tuple[Stored, Path] | None:
        path = self._path(ref)
        try:
            meta = Stored(**json.loads(path.with_name(f".{ref.artifact}.meta").read_text()))
        except FileNotFoundError:
            return None
        return meta, path


class S3Store:
    """S3-compatible storage (boto3, off the event loop), for scale."""

    temporary_copies = True

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, spool: Path) -> None:
        import boto3  # an optional dependency: pip install wallestars-agents[cloud]

        self.s3 = boto3.client("s3", endpoint_url=endpoint_url)
        self.bucket = bucket
        self.prefix = prefix
        self.spool = spool

    async def put(self, ref: ArtifactRef, tmp: Path, meta: Stored) -> None:
        extra = {"ContentType": meta.content_type, "Metadata": {"sha256": meta.sha256}}
        await asyncio.to_thread(
            self.s3.upload_file, str(tmp), self.bucket, self.prefix + ref.key, ExtraArgs=extra
        )
        tmp.unlink(missing_ok=True)

    async def open(self, ref: ArtifactRef) -> tuple[Stored, Path] | None:
        fd, name = tempfile.mkstemp(dir=self.spool)
        os.close(fd)
        try:
            head = await asyncio.to_thread(
                self.s3.head_object, Bucket=self.bucket, Key=self.prefix + ref.key
            )
            await asyncio.to_thread(self.s3.download_file, self.bucket, self.prefix + ref.key, name)
        except Exception as e:  # botocore's ClientError for a missing key
            Path(name).unlink(missing_ok=True)
            if "404" in str(e) or "NoSuchKey" in str(e) or "Not Found" in str(e):
                return None
            raise
        meta = Stored(
            head["Metadata"].get("sha256", ""),
            int(head["ContentLength"]),
            head.get("ContentType", "application/octet-stream"),
        )
        return meta, Path(name)


STORED_PATH = re.compile(r"/api/artifacts/([^/]+)/([^/]+)/([^/]+)/([0-9]+)/([^/]+)")


def baseline_source(task: Mapping[str, Any]) -> tuple[str, str] | None:
    """(task name, artifact name) that a screenshot task's payload names as its baseline."""
    spec = task.get("spec") or {}
    art = ((spec.get("payload") or {}).get("baseline") or {}).get("artifact")
    if spec.get("type") != "screenshot" or not isinstance(art, Mapping):
        return None
    name, artifact = art.get("task"), art.get("name", "screenshot.png")
    if not isinstance(name, str) or not isinstance(artifact, str):
        return None
    return name, artifact


def stored_ref(task: Mapping[str, Any], artifact: str) -> ArtifactRef | None:
    """Where ``task``'s result says its artifact ``artifact`` is stored (only a URI that
    names this very task: a result cannot point into another task's files)."""
    meta = task["metadata"]
    for a in ((task.get("status") or {}).get("result") or {}).get("artifacts") or []:
        if not isinstance(a, Mapping) or a.get("name") != artifact:
            continue
        m = STORED_PATH.search(urlsplit(str(a.get("uri", ""))).path)
        if m and m[1] == meta["namespace"] and m[2] == meta["name"] and m[3] == meta["uid"]:
            return ArtifactRef(m[1], m[2], m[3], int(m[4]), m[5])
    return None


def parse_ref(request: web.Request) -> ArtifactRef:
    m = request.match_info
    ns, name, uid, attempt, artifact = (
        m["namespace"],
        m["name"],
        m["uid"],
        m["attempt"],
        m["artifact"],
    )
    if not (K8S_NAME.fullmatch(ns) and K8S_NAME.fullmatch(name) and UID.fullmatch(uid)):
        raise web.HTTPNotFound()
    if not attempt.isdigit() or not 1 <= int(attempt) <= 1000 or not NAME.fullmatch(artifact):
        raise web.HTTPNotFound()
    return ArtifactRef(ns, name, uid, int(attempt), artifact)


class ArtifactHandlers:
    def __init__(
        self, kube: Kube, masters: list[bytes], store: Store, settings: Any, spool: Path
    ) -> None:
        self.kube = kube
        self.masters = masters
        self.store = store
        self.s = settings
        self.spool = spool

    def uri(self, ref: ArtifactRef) -> str:
        return f"{self.s.public_url}/api/artifacts/{ref.key}"

    async def put(self, request: web.Request) -> web.StreamResponse:
        try:
            ref = parse_ref(request)
        except web.HTTPNotFound:
            metrics.ARTIFACTS.labels("bad-path").inc()
            return error(
                404, "bad-path", "PUT /api/artifacts/{namespace}/{name}/{uid}/{attempt}/{artifact}"
            )
        try:
            check_headers(request, self.s.max_artifact_bytes)
        except BodyRefused as e:
            metrics.ARTIFACTS.labels("refused-body").inc()
            return e.response
        # Who may upload is known only once the whole body is hashed; refuse cheap cases first.
        obj = await self.kube.get_task(ref.namespace, ref.name)
        if obj is None or obj["metadata"].get("uid") != ref.uid:
            metrics.ARTIFACTS.labels("unknown-task").inc()
            return error(
                410,
                "unknown-task",
                f"AgentTask {ref.namespace}/{ref.name} ({ref.uid}) does not exist",
            )
        if not accepts_evidence(obj, ref.attempt, datetime.now(UTC)):
            metrics.ARTIFACTS.labels("stale-attempt").inc()
            return error(409, "stale-attempt", f"attempt {ref.attempt} is not a running attempt")
        try:  # headers are checked before a byte of the body is read
            h = parse_standard_headers(
                header_values(request), time.time(), self.s.tolerance_seconds
            )
        except SignatureError as e:
            metrics.ARTIFACTS.labels("bad-signature").inc()
            return error(401, e.reason, str(e))
        keys = attempt_keys(self.masters, ref.uid, ref.attempt)
        macs = [hmac.new(k, h.signed_prefix, hashlib.sha256) for k in keys]
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.spool, prefix=".upload-")
        tmp = Path(tmp_name)
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async with asyncio.timeout(max(self.s.body_timeout_seconds, 60.0)):
                    while True:
                        chunk = await request.content.read(CHUNK)
                        if not chunk:
                            break
                        size += len(chunk)
                        if size > self.s.max_artifact_bytes:
                            metrics.ARTIFACTS.labels("refused-body").inc()
                            return error(
                                413,
                                "body-too-large",
                                f"artifacts are limited to {self.s.max_artifact_bytes} bytes",
                            )
                        for m in macs:
                            m.update(chunk)
                        digest.update(chunk)
                        f.write(chunk)
            if not any_match(h.signatures, (m.digest() for m in macs)):
                metrics.ARTIFACTS.labels("bad-signature").inc()
                return error(401, "bad-signature", "no signature matches")
            meta = Stored(
                digest.hexdigest(), size, request.content_type or "application/octet-stream"
            )
            await self.store.put(ref, tmp, meta)
        except TimeoutError:
            metrics.ARTIFACTS.labels("refused-body").inc()
            return error(408, "slow-body", "the artifact did not arrive in time")
        finally:
            tmp.unlink(missing_ok=True)
        metrics.ARTIFACTS.labels("stored").inc()
        metrics.ARTIFACT_BYTES.inc(size)
        return web.json_response(
            {
                "name": ref.artifact,
                "uri": self.uri(ref),
                "sha256": meta.sha256,
                "size": size,
                "contentType": meta.content_type,
            },
            status=201,
        )

    async def get(self, request: web.Request) -> web.StreamResponse:
        try:
            ref = parse_ref(request)
        except web.HTTPNotFound:
            return error(404, "not-found", "no such artifact")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) > 16384:
            metrics.ARTIFACTS.labels("unauthenticated").inc()
            return error(
                401,
                "unauthenticated",
                "send Authorization: Bearer <Kubernetes token>",
                **{"WWW-Authenticate": "Bearer"},
            )
        try:
            who = await self.kube.review_token(auth.removeprefix("Bearer ").strip())
            if who is None:
                metrics.ARTIFACTS.labels("unauthenticated").inc()
                return error(
                    401,
                    "unauthenticated",
                    "the token was not accepted by the API server",
                    **{"WWW-Authenticate": "Bearer"},
                )
            allowed = await self.kube.can_get_task(*who, ref.namespace, ref.name)
        except ApiError as e:
            log.warning("token/access review failed: %s", e.message)
            return error(
                503,
                "review-unavailable",
                "could not check access; try again",
                **{"Retry-After": "2"},
            )
        if not allowed:
            metrics.ARTIFACTS.labels("forbidden").inc()
            return error(
                403, "forbidden", f"{who[0]} may not get agenttask {ref.namespace}/{ref.name}"
            )
        return await self.serve(request, ref, "served")

    async def baseline(self, request: web.Request) -> web.StreamResponse:
        """A running attempt's baseline image: checked in the order of cost, the signature
        before any API read."""
        m = request.match_info
        ns, name, uid, attempt = m["namespace"], m["name"], m["uid"], m["attempt"]
        if not (K8S_NAME.fullmatch(ns) and K8S_NAME.fullmatch(name) and UID.fullmatch(uid)
                and attempt.isdigit() and 1 <= int(attempt) <= 1000):  # fmt: skip
            return error(404, "bad-path", "GET /api/baseline/{namespace}/{name}/{uid}/{attempt}")
        try:
            h = parse_standard_headers(
                header_values(request), time.time(), self.s.tolerance_seconds
            )
        except SignatureError as e:
            metrics.ARTIFACTS.labels("bad-signature").inc()
            return error(401, e.reason, str(e))
        content = h.signed_prefix + read_content(request.path)
        expected = (hmac.new(k, content, hashlib.sha256).digest()
                    for k in attempt_keys(self.masters, uid, int(attempt)))  # fmt: skip
        if not any_match(h.signatures, expected):
            metrics.ARTIFACTS.labels("bad-signature").inc()
            return error(401, "bad-signature", "no signature matches")
        reader = await self.kube.get_task(ns, name)
        if reader is None or reader["metadata"].get("uid") != uid:
            metrics.ARTIFACTS.labels("unknown-task").inc()
            return error(410, "unknown-task", f"AgentTask {ns}/{name} ({uid}) does not exist")
        if not accepts_evidence(reader, int(attempt), datetime.now(UTC)):
            metrics.ARTIFACTS.labels("stale-attempt").inc()
            return error(409, "stale-attempt", f"attempt {attempt} is not a running attempt")
        source = baseline_source(reader)
        if source is None:
            metrics.ARTIFACTS.labels("no-baseline").inc()
            return error(404, "no-baseline", f"AgentTask {ns}/{name} names no baseline "
                         "artifact (a screenshot's spec.payload.baseline.artifact)")  # fmt: skip
        task, artifact = source
        src = await self.kube.get_task(ns, task)
        ref = stored_ref(src, artifact) if src is not None else None
        if ref is None:
            metrics.ARTIFACTS.labels("no-baseline").inc()
            why = "does not exist" if src is None else f"has no artifact {artifact} in its result"
            return error(404, "no-baseline", f"baseline: AgentTask {ns}/{task} {why}")
        return await self.serve(request, ref, "baseline-served")

    async def serve(
        self, request: web.Request, ref: ArtifactRef, verdict: str
    ) -> web.StreamResponse:
        found = await self.store.open(ref)
        if found is None:
            return error(404, "not-found", "no such artifact")
        meta, path = found
        metrics.ARTIFACTS.labels(verdict).inc()
        headers = {
            "Content-Type": meta.content_type,
            "X-Content-SHA256": meta.sha256,
            "Content-Disposition": f'attachment; filename="{ref.artifact}"',
            "X-Content-Type-Options": "nosniff",
        }
        if not self.store.temporary_copies:
            return web.FileResponse(path, headers=headers)
        # A downloaded copy is unlinked before its first byte goes out, then streamed from
        # the open descriptor: by the time a client sees the end of the body no copy is
        # left on disk, and a client that hangs up mid-body leaves none either.
        f = await asyncio.to_thread(path.open, "rb")
        path.unlink(missing_ok=True)
        try:
            resp = web.StreamResponse(headers=headers)
            resp.content_length = meta.size
            await resp.prepare(request)
            while chunk := await asyncio.to_thread(f.read, CHUNK * 4):
                await resp.write(chunk)
            await resp.write_eof()
        finally:
            f.close()
        return resp
