#!/usr/bin/env bash
# Run the test suite as an ordinary user, from root: the check that nothing needs root.
#
#   scripts/test_as_user.sh tuser                  # the whole suite as the user tuser
#   scripts/test_as_user.sh tuser -m 'not slow'    # any pytest arguments pass through
#   PYTHON=/opt/py311/bin/python3 scripts/test_as_user.sh tuser
#
# It clones this repository's committed state (HEAD; uncommitted changes are not in it) into
# ${SBR_USER_COPY:-/tmp/sbr-USER}, a copy the user owns (not `cp -r`: a worktree's .git points
# into a repository owned by root, and git refuses it), builds the user's own venv there from
# $PYTHON (default python3), installs the pinned Claude Code CLI into the user's cache, and runs
# pytest with `su -` (the user's own HOME; pytest's temp directories in /tmp/pytest-of-USER).
# $PYTHON must be readable by the user and at least 3.11.4 (tarfile's extraction filters).
set -euo pipefail

user="${1:?usage: scripts/test_as_user.sh USER [pytest arguments]}"
shift
if [ "$(id -u)" != 0 ]; then
  echo "Run this as root: it switches to $user with su." >&2
  exit 2
fi
id "$user" > /dev/null
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${SBR_USER_COPY:-/tmp/sbr-$user}"
python="${PYTHON:-python3}"

check='import sys, ssl, tarfile; tarfile.data_filter; assert sys.version_info >= (3, 11, 4)'
if ! su "$user" -s /bin/sh -c "$(printf '%q -c %q' "$python" "$check")" > /dev/null 2>&1; then
  echo "$python cannot serve as $user's Python: it must be readable by $user, at least 3.11.4" >&2
  echo "and have ssl. Set PYTHON to one that is (docs/testing.md says how to make one)." >&2
  exit 1
fi

echo "== cloning HEAD into $dest (owned by $user)" >&2
rm -rf "$dest"
git clone -q --no-hardlinks "$here" "$dest"
chown -R "$user": "$dest"

args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done
echo "== venv, dev dependencies and Claude Code CLI for $user; then pytest$args" >&2
exec su - "$user" -s /bin/bash -c "cd $(printf '%q' "$dest") \
  && $(printf '%q' "$python") -m venv .venv \
  && .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' \
  && { claude=\$(scripts/install_claude.sh 2>/dev/null | tail -n 1) || true; } \
  && { [ -x \"\$claude\" ] && export SANDBOXRUN_TEST_CLAUDE=\"\$claude\" || true; } \
  && .venv/bin/python -m pytest -p no:cacheprovider$args"
