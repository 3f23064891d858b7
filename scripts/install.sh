#!/usr/bin/env bash
# Set up sandboxrun on this machine: a virtualenv in .venv with sandboxrun installed, and the
# `sandboxrun` command linked into ~/.local/bin.
#
#   scripts/install.sh                 # sandboxrun itself (enough for E2B runs and --dry-run)
#   scripts/install.sh --with-claude   # also Claude Code (npm), needed for `--backend local`
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
with_claude=0
for arg in "$@"; do
  case "$arg" in
    --with-claude) with_claude=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "sandboxrun needs Python 3.11 or newer (found: $("$python" --version 2>&1))." >&2
  echo "Install it, or point PYTHON at one: PYTHON=python3.12 scripts/install.sh" >&2
  exit 1
fi
for tool in git tar; do
  command -v "$tool" >/dev/null || { echo "sandboxrun needs $tool on PATH; install it first." >&2; exit 1; }
done
command -v zstd >/dev/null || echo "note: zstd not found; --compression zstd will be unavailable (gzip works)."
"$here/scripts/install_bwrap.sh" || echo "note: without bubblewrap, --backend local refuses to run (unless --no-isolation)."

if [ ! -x .venv/bin/python ]; then
  echo "Creating virtualenv in .venv ..."
  "$python" -m venv .venv
fi
echo "Installing sandboxrun into .venv ..."
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# pip's build chatter goes to a log; shown only if the install fails.
if ! .venv/bin/python -m pip install --disable-pip-version-check -e . > .venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "Installing sandboxrun failed (full log: .venv/install.log)." >&2
  exit 1
fi
.venv/bin/sandboxrun --help >/dev/null

mkdir -p "$HOME/.local/bin"
ln -sf "$here/.venv/bin/sandboxrun" "$HOME/.local/bin/sandboxrun"

if [ "$with_claude" = 1 ]; then
  if command -v claude >/dev/null; then
    echo "Claude Code already installed: $(claude --version 2>/dev/null || echo '?')"
  else
    command -v npm >/dev/null || { echo "--with-claude needs Node.js and npm." >&2; exit 1; }
    # Newer releases need Node >= 22; this pin runs on Node 20 too.
    npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION:-2.1.330}"
  fi
fi

echo
echo "sandboxrun is installed: $HOME/.local/bin/sandboxrun (ensure ~/.local/bin is on PATH)."
echo "Try it without any API key, from inside a git repository:"
echo "  sandboxrun run --backend local --dry-run --prompt 'hello'"
