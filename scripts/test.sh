#!/usr/bin/env bash
# Install the development dependencies and run the whole test suite (what CI runs).
#
#   scripts/test.sh                  # everything, including slow end-to-end tests
#   scripts/test.sh -m 'not slow'    # the fast part; any pytest arguments pass through
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]' \
    > .venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "Installing the dev dependencies failed (full log: .venv/install.log)." >&2
  exit 1
fi

# The real Claude Code CLI for the end-to-end tests, cached outside the repo. If it cannot be
# installed the e2e tests report SKIPPED with the reason, never passed.
if [ -x scripts/install_claude.sh ]; then
  claude_path="$(scripts/install_claude.sh | tail -n 1)"
  if [ -x "$claude_path" ]; then
    export SANDBOXRUN_TEST_CLAUDE="$claude_path"
  fi
fi

scripts/install_bwrap.sh || true  # the local backend's tests run agents under real bubblewrap
scripts/install_chromium.sh || true  # the dashboard page's tests drive a real headless Chromium
.venv/bin/ruff check sandboxrun tests benchmarks
.venv/bin/ruff format --check --quiet sandboxrun tests benchmarks
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
