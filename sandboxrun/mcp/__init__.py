"""The MCP server: sandboxrun's sessions, presence, messages, claims and sandbox runs as tools.

Only this package and ``sandboxrun/web`` import fastmcp; the core stays free of it.
"""
