"""Sandbox mode: one agent run with ``claude -p`` in an E2B or local sandbox, start to finish."""
