"""The node stand-in: the kubelet's stand-in for the local control plane (dev and tests only)."""
