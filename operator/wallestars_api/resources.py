"""Names of the API (crds/ is the schema; this is how code refers to it)."""

from __future__ import annotations

GROUP = "agents.wallestars.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
AGENTTASKS = "agenttasks"
AGENTS = "agents"
AGENTWORKFLOWS = "agentworkflows"
AGENTSCHEDULES = "agentschedules"
# Finalizers, labels and annotations live on our own domain.
LABEL_TASK = f"{GROUP}/task"
LABEL_ATTEMPT = f"{GROUP}/attempt"
# A Secret the operator may use as an Agent's (or a task's) credential carries this label
# with the value "true"; any other Secret is refused before its data is looked at.
LABEL_CREDENTIAL = f"{GROUP}/credential"
