"""Names of the API (crds/ is the schema; this is how code refers to it)."""

from __future__ import annotations

GROUP = "agents.wallestars.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
AGENTTASKS = "agenttasks"
AGENTS = "agents"
# Finalizers, labels and annotations live on our own domain.
LABEL_TASK = f"{GROUP}/task"
LABEL_ATTEMPT = f"{GROUP}/attempt"
