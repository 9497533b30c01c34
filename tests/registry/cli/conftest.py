"""Fixtures for the CLI's runner commands: a runner serving SmolLM2 in-process (see tests/support/runner.py)."""

from tests.support.runner import harness, start_runner

__all__ = ["harness", "start_runner"]
