#!/bin/sh
# An agent that does no browser work, for bench/operator_jobs.py: one signed success
# callback (Standard Webhooks, the attempt key from its Secret) sent with curl, so a pod
# costs the machine a shell, openssl and curl rather than a Python interpreter.
# It reports when it started and when it sent its callback (wall clock, seconds).
set -eu
started=$(date +%s.%N)
key_hex=$(sed 's/^whsec_//' "${WALLESTARS_KEY_FILE:-/var/run/wallestars/key/key}" | base64 -d | od -An -vtx1 | tr -d ' \n')
id="msg_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
ts=$(date +%s)
sent=$(date +%s.%N)
body=$(printf '{"taskId":"%s","agentId":"%s","task":{"namespace":"%s","name":"%s"},"attempt":%s,"status":"success","results":{"data":{"startedAt":%s,"callbackSentAt":%s}}}' \
  "$WALLESTARS_TASK_UID" "$WALLESTARS_AGENT_ID" "$WALLESTARS_TASK_NAMESPACE" "$WALLESTARS_TASK_NAME" "$WALLESTARS_ATTEMPT" "$started" "$sent")
sig=$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64)
curl -fsS --retry 5 --retry-all-errors -o /dev/null -X POST "$WALLESTARS_CALLBACK_URL" \
  -H 'Content-Type: application/json' -H "webhook-id: $id" -H "webhook-timestamp: $ts" \
  -H "webhook-signature: v1,$sig" --data-binary "$body"
