"""``python -m sandboxrun``: the CLI.

``python -m sandboxrun mcp`` with nothing more is the stdio MCP server that Claude Code starts
for every local child and the master: it goes straight there
(:func:`sandboxrun.mcp.server.stdio_main`), without loading the CLI, so a child's tools are
ready sooner. Anything else (``mcp --http``, ``mcp install``, ``--help``) is the CLI's.
"""

import sys

if sys.argv[1:] == ["mcp"]:
    from sandboxrun.mcp.server import stdio_main as main
else:
    from sandboxrun.cli import main

main()
