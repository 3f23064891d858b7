# shellcheck shell=bash
# Installing a Debian package with apt-get, shared by scripts/install_*.sh (source it):
#
#   . "$(dirname "$0")/lib/apt.sh"
#   apt_install "bubblewrap" "the local backend runs agents under it" bubblewrap || status=$?
#   by_hand "bubblewrap (bwrap) is not installed, and this script cannot install it here." \
#     "sudo apt-get install -y bubblewrap" "Without it, ..."
#
# apt_install runs apt-get as root, or through `sudo -n` (never a password prompt) when not root;
# when the plain install fails it refreshes the package lists once and tries again.

# apt_install LABEL WHY PACKAGE...: install the packages; says what it does on stdout.
# Returns 0 when apt-get installed them, 1 when apt-get failed (said on stderr), 2 when it
# cannot run here (no apt-get, or not root and no password-less sudo): nothing was tried.
apt_install() {
  local label="$1" why="$2"
  shift 2
  command -v apt-get >/dev/null 2>&1 || return 2
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      return 2
    fi
  fi
  echo "Installing $label with apt-get ($why) ..."
  if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null 2>&1 \
         && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }; then
    return 0
  fi
  echo "Installing $label with apt-get failed." >&2
  return 1
}

# by_hand WHAT_IS_MISSING COMMAND CONSEQUENCE: tell the person (stderr) what to run themselves.
by_hand() {
  echo "$1" >&2
  echo "Install it yourself: $2" >&2
  echo "$3" >&2
}
