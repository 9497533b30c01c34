"""Benchmarks (not part of the test suite): run with `.venv/bin/python -m bench.<name>`."""
