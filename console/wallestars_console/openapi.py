"""The application API's OpenAPI 3.1 document (served at /api/openapi.json; the
schemathesis test fuzzes the service against it)."""

from __future__ import annotations

from typing import Any

from wallestars_console.tasks import PHASES, PRIORITY_WORDS

NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "maxLength": 63}


def _error() -> dict[str, Any]:
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "reason", "message", "fields"],
        "properties": {"code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"},
                       "fields": {"type": "array", "items": {"type": "object", "properties": {
                           "field": {"type": "string"}, "reason": {"type": "string"},
                           "message": {"type": "string"}}}}}}}}  # fmt: skip


def _task() -> dict[str, Any]:
    return {"type": "object", "required": ["id", "namespace", "name", "type", "status"], "properties": {
        "id": {"type": "string", "description": "The AgentTask's UID."},
        "namespace": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
        "priority": {"type": "integer"}, "status": {"type": "string", "enum": list(PHASES)},
        "progress": {"type": "integer"}, "agent": {"type": "string"}, "attempt": {"type": "integer"},
        "createdAt": {"type": "string"}, "startedAt": {"type": "string"}, "completedAt": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "cancelRequested": {"type": "boolean"}, "reason": {"type": "string"}, "message": {"type": "string"},
        "results": {"type": "object", "description": "{data, artifacts, logs, metrics}"},
        "error": {"type": "object", "description": "{code, message, stack, retryable}"}}}  # fmt: skip


def _create() -> dict[str, Any]:
    return {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
        "name": NAME,
        "type": {"type": "string", "description": "screenshot, scrape, e2e-test, performance, accessibility, api-test, echo, custom"},
        "payload": {"type": "object", "description": "As the type reads it (docs/browser-agent.md, docs/cloud-agents.md)."},
        "priority": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 10},
                               {"type": "string", "enum": list(PRIORITY_WORDS)}]},
        "agentType": {"type": "string", "enum": ["browser", "cloud"],
                      "description": "Any Ready Agent of this type with the task's capability; or agentRef."},
        "agentRef": NAME, "capabilities": {"type": "array", "items": {"type": "string"}},
        "timeoutSeconds": {"type": "integer"}, "deadlineSeconds": {"type": "integer"},
        "retries": {"type": "object"}, "notify": {"type": "array", "items": {"type": "object"}},
        "ttlSecondsAfterFinished": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}  # fmt: skip


def _agent() -> dict[str, Any]:
    cond = {"type": "object", "properties": {"status": {"type": "string"}, "reason": {"type": "string"},
                                             "message": {"type": "string"}}}  # fmt: skip
    return {"type": "object", "required": ["name", "type"], "properties": {
        "name": {"type": "string"}, "namespace": {"type": "string"}, "type": {"type": "string"},
        "provider": {"type": "string"}, "capabilities": {"type": "array", "items": {"type": "string"}},
        "slots": {"type": "integer"}, "activeTasks": {"type": "integer"}, "queuedTasks": {"type": "integer"},
        "successRate": {"type": ["number", "null"]}, "ready": cond, "healthy": cond}}  # fmt: skip


def document() -> dict[str, Any]:
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

    def answers(ok: str, schema: str, *codes: int) -> dict[str, Any]:
        out: dict[str, Any] = {ok: {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}}}  # fmt: skip
        for c in (400, 401, 403, 404, *codes, 503):
            out[str(c)] = {
                "description": "refused (the API server's own words, field by field)",
                "content": err,
            }
        return out

    ns = {"name": "namespace", "in": "path", "required": True, "schema": NAME}
    name = {"name": "name", "in": "path", "required": True, "schema": NAME}
    q = [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
        ("phase", {"type": "string", "enum": list(PHASES)}), ("agent", {"type": "string"}),
        ("type", {"type": "string"}), ("labelSelector", {"type": "string"}),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 500}), ("continue", {"type": "string"}))]  # fmt: skip
    base = "/api/v1/namespaces/{namespace}"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Wallestars Agents application API", "version": "v1",
                 "description": "Tasks and agents as the caller: send `Authorization: Bearer <token>` (a token "
                                "the Kubernetes API server accepts); Kubernetes RBAC decides what it may see and do."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _error(), "Task": _task(), "TaskCreate": _create(), "Agent": _agent(),
                        "TaskList": {"type": "object", "required": ["items"], "properties": {
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                            "continue": {"type": "string"}, "remaining": {"type": ["integer", "null"]}}},
                        "AgentList": {"type": "object", "required": ["items"], "properties": {
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Agent"}}}}},
        },
        "security": [{"bearer": []}],
        "paths": {
            f"{base}/tasks": {
                "post": {"operationId": "createTask", "summary": "Submit a task (the plan's {type, payload, priority, agentType})",
                         "parameters": [ns], "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/TaskCreate"}}}},
                         "responses": answers("201", "Task", 409, 413, 422)},
                "get": {"operationId": "listTasks", "summary": "Tasks, filtered and paged by the API server",
                        "parameters": [ns, *q], "responses": answers("200", "TaskList")},
            },
            f"{base}/tasks/{{name}}": {
                "get": {"operationId": "getTask", "parameters": [ns, name], "responses": answers("200", "Task")}},
            **{f"{base}/tasks/{{name}}/{action}": {"post": {
                "operationId": f"{action}Task", "parameters": [ns, name],
                "responses": answers("200", "Task", 409, 422)}} for action in ("cancel", "suspend", "resume")},
            f"{base}/agents": {
                "get": {"operationId": "listAgents", "parameters": [ns], "responses": answers("200", "AgentList")}},
            f"{base}/events": {"get": {
                "operationId": "followNamespace", "parameters": [ns],
                "summary": "Server-Sent Events: agent:status, task:update, task:<id>:complete",
                "responses": {"200": {"description": "an event stream", "content": {"text/event-stream": {
                    "schema": {"type": "string"}}}},
                              **{str(c): {"description": "refused", "content": err} for c in (401, 403, 404, 503)}}}},
        },
    }  # fmt: skip
