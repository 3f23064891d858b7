#!/usr/bin/env bash
# Make sure bubblewrap (bwrap) is installed: `sandboxrun run --backend local` runs the agent
# under it on Linux and refuses to start without it (unless --no-isolation).
#
#   scripts/install_bwrap.sh      # installs with apt-get when it can (root or sudo), else says how
#
# Exit 0 when bwrap is there (or not needed: not Linux), 1 when it could not be installed.
set -euo pipefail

if [ "$(uname -s)" != "Linux" ]; then
  echo "note: bubblewrap is Linux-only; on $(uname -s) the local backend is NOT isolated (use --backend e2b for isolation)."
  exit 0
fi
if command -v bwrap >/dev/null 2>&1; then
  echo "bubblewrap present: $(bwrap --version 2>/dev/null || echo bwrap)"
  exit 0
fi

manual="sudo apt-get install -y bubblewrap   (Fedora: sudo dnf install bubblewrap; Arch: sudo pacman -S bubblewrap)"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    sudo="-"
  fi
  if [ "$sudo" != "-" ]; then
    echo "Installing bubblewrap with apt-get (the local backend runs agents under it) ..."
    if $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null 2>&1 \
           && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; }; then
      echo "bubblewrap installed: $(bwrap --version 2>/dev/null || echo bwrap)"
      exit 0
    fi
    echo "Installing bubblewrap with apt-get failed." >&2
  fi
fi
echo "bubblewrap (bwrap) is not installed, and this script cannot install it here." >&2
echo "Install it yourself: $manual" >&2
echo "Without it, \`sandboxrun run --backend local\` refuses to start unless --no-isolation." >&2
exit 1
