"""Fixtures for the CLI's runner commands: runners serving SmolLM2 or the scripted bigram model in-process."""

from tests.support.runner import harness, scripted, start_runner

__all__ = ["harness", "scripted", "start_runner"]
