"""sandboxrun: run many Claude Code agents in parallel, each on its own git branch."""

__version__ = "0.1.0"
