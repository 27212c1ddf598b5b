from .runner import entrypoint

entrypoint()
