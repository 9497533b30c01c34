"""Fixtures for the CLI's `ps`/`stop` tests: a runner serving SmolLM2 in-process."""

from tests.support.runner import harness, start_runner

__all__ = ["harness", "start_runner"]
