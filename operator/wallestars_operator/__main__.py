"""wallestars-operator: the AgentTask operator (settings from WALLESTARS_* env)."""

from __future__ import annotations

import kopf

from wallestars_operator import handlers  # noqa: F401  (registers the handlers)
from wallestars_operator.config import Settings


def main() -> None:
    s = Settings()
    # Standalone: kopf's own peering is not used; the Lease in leader.py decides who acts.
    kopf.run(
        clusterwide=True,
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{s.liveness_port}/healthz",
    )


if __name__ == "__main__":
    main()
