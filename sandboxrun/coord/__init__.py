"""Coordination: presence, messages, claims and merges, a library over the store."""
