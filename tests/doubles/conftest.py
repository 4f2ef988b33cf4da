"""Fixtures of the msync double for the tests in this directory."""

from tests.doubles.fixtures import msync_double

__all__ = ["msync_double"]
