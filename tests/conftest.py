"""Fixtures for the top-level tests live in sbr_testlib (importable by name)."""

from sbr_testlib import cli, isolated_env, repo  # noqa: F401
