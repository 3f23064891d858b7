"""The HTTP control plane served beside the MCP server by ``sandboxrun mcp --http``."""
