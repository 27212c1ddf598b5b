#!/usr/bin/env bash
# Builds the Lambda deployment zip: the handler, your task modules, the SDK and the cloud
# agent package with their dependencies (pydantic, aiohttp), for Lambda's x86_64 Python.
#   agent_images/aws_lambda/package.sh [OUT.zip]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(realpath -m "${1:-$here/build/wallestars-lambda.zip}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip install --quiet --target "$work" --platform manylinux2014_x86_64 \
  --implementation cp --python-version 3.11 --only-binary=:all: \
  "pydantic>=2.7,<3" "pydantic-settings>=2.3,<3" "aiohttp>=3.10,<4"
cp -r "$repo/agent_images/wallestars_sdk" "$repo/agent_images/wallestars_cloud" "$work/"
cp "$here/handler.py" "$here/my_tasks.py" "$work/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$(dirname "$out")"
rm -f "$out"
(cd "$work" && python3 -m zipfile -c "$out" .)
echo "$out"
