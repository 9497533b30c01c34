"""Helpers shared by the test suite: real server processes, real models, a legacy-pull emulator."""
