#!/usr/bin/env bash
# Make sure bubblewrap (bwrap) is installed: `sandboxrun run --backend local` runs the agent
# under it on Linux and refuses to start without it (unless --no-isolation).
#
#   scripts/install_bwrap.sh      # installs with apt-get when it can (root or sudo), else says how
#
# Exit 0 when bwrap is there (or not needed: not Linux), 1 when it could not be installed.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

if [ "$(uname -s)" != "Linux" ]; then
  echo "note: bubblewrap is Linux-only; on $(uname -s) the local backend is NOT isolated (use --backend e2b for isolation)."
  exit 0
fi
if command -v bwrap >/dev/null 2>&1; then
  echo "bubblewrap present: $(bwrap --version 2>/dev/null || echo bwrap)"
  exit 0
fi

if apt_install bubblewrap "the local backend runs agents under it" bubblewrap; then
  echo "bubblewrap installed: $(bwrap --version 2>/dev/null || echo bwrap)"
  exit 0
fi
by_hand "bubblewrap (bwrap) is not installed, and this script cannot install it here." \
  "sudo apt-get install -y bubblewrap   (Fedora: sudo dnf install bubblewrap; Arch: sudo pacman -S bubblewrap)" \
  "Without it, \`sandboxrun run --backend local\` refuses to start unless --no-isolation."
exit 1
