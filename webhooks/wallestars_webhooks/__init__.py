"""The webhook service: verifies signed agent callbacks and writes results into AgentTask status."""
