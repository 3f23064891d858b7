"""Local mode: interactive Claude Code sessions in the user's own worktrees."""
