"""wallestars-operator: the AgentTask operator (settings from WALLESTARS_* env)."""

from __future__ import annotations

import logging
import sys
import time

import kopf

from wallestars_operator import handlers  # noqa: F401  (registers the handlers)
from wallestars_operator.config import Settings
from wallestars_operator.restarts import RestartPolicy, after_failure, transient

log = logging.getLogger("wallestars.operator")


def main() -> None:
    s = Settings()
    policy, failed = RestartPolicy(), 0
    while True:
        started = time.monotonic()
        try:
            # Standalone: kopf's own peering is not used; the Lease in leader.py decides.
            kopf.run(
                clusterwide=True,
                standalone=True,
                liveness_endpoint=f"http://0.0.0.0:{s.liveness_port}/healthz",
            )
            return  # stopped by a signal
        except Exception as e:
            if not transient(e):
                raise
            failed, delay = after_failure(policy, failed, time.monotonic() - started)
            if delay is None:
                log.error("kopf stopped %d times in a row; giving up: %r", failed, e)
                sys.exit(1)
            # The cleanup handler has run: the next run starts from a fresh cache.
            log.warning("kopf stopped on a transient API error (%r); running it again in %.0f s",
                        e, delay)  # fmt: skip
            time.sleep(delay)


if __name__ == "__main__":
    main()
