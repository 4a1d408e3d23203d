"""modelctl: pull, verify, fit-check and run open models from OCI registries."""

__version__ = "0.1.0"
