"""Benchmarks: our tools against the host kernel and peer tools (``python -m bench``)."""
