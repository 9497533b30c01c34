"""Fixtures for runner tests: runners serving SmolLM2 or the scripted bigram model (tests/support/runner.py)."""

from tests.support.runner import harness, scripted, start_runner

__all__ = ["harness", "scripted", "start_runner"]
