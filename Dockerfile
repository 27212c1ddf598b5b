# The service image: the operator, the webhook service and the console, one distribution
# with three entry points (the chart's Deployments choose one by `command`). Non-root, and it runs
# with a read-only root filesystem.
#
#   docker build -t ghcr.io/wallestars/agents:0.1.0 .
#   docker run --rm ghcr.io/wallestars/agents:0.1.0 wallestars-webhooks --help
#
# PYTHON_BASE is Python's slim image; the local build (hack/realnode/images.py) passes an
# equivalent made from Debian's packages, since no registry is reachable there.
# tests/integration/test_chart_render.py keeps the entry points, user and Python version
# in agreement with the chart and pyproject.toml.
ARG PYTHON_BASE=python:3.11-slim-bookworm
ARG GO_BASE=golang:1.26.8-bookworm

# smokescreen: the operator's notifications leave through it, as the browser's pages do
# (the same pinned build module as agent_images/Dockerfile.browser and the tests).
FROM ${GO_BASE} AS smokescreen
WORKDIR /build
COPY hack/gobuild/smokescreen/ ./
ENV GOFLAGS="-mod=readonly -trimpath -buildvcs=false" GOSUMDB=off CGO_ENABLED=0 GOTOOLCHAIN=local
RUN go build -ldflags "-s -w" -o /out/smokescreen github.com/stripe/smokescreen

FROM ${PYTHON_BASE}
ARG APP_UID=10001
RUN groupadd --gid ${APP_UID} app \
 && useradd --uid ${APP_UID} --gid ${APP_UID} --home-dir /tmp --no-create-home --shell /usr/sbin/nologin app
WORKDIR /opt/wallestars
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY webhooks/ webhooks/
COPY agent_images/ agent_images/
COPY console/ console/
COPY --from=smokescreen /out/smokescreen /usr/local/bin/smokescreen
RUN pip install --no-cache-dir --disable-pip-version-check . \
 && python -c "import wallestars_operator, wallestars_webhooks, wallestars_console"
ENV WALLESTARS_SMOKESCREEN=/usr/local/bin/smokescreen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER ${APP_UID}:${APP_UID}
CMD ["wallestars-operator"]
