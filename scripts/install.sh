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
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

steps=5
[ "$with_claude" = 1 ] && steps=6
step_no=0
step_started=$SECONDS
# Each step says what it does before doing it, and how long it took after.
step() {
  step_no=$((step_no + 1))
  step_started=$SECONDS
  printf '[%d/%d] %s ... ' "$step_no" "$steps" "$1"
}
done_step() { echo "${1:-done} ($((SECONDS - step_started))s)"; }
fail() { echo "failed"; echo "$*" >&2; exit 1; }

# Run a long command with its output in a log, printing a dot every 2 s so progress shows.
with_dots() {
  local log="$1"; shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    kill -0 "$pid" 2>/dev/null && printf '.'
  done
  wait "$pid"
}

step "Checking Python 3.11.4+, git and tar"
# 3.11.4 is the first 3.11 with tarfile's extraction filters, which unpacking relies on
# (Debian 12's python3 is 3.11.2): take the first good Python among the usual names.
ok_python() { "$1" -c 'import sys, tarfile; sys.exit(sys.version_info < (3, 11, 4) or not hasattr(tarfile, "data_filter"))' 2>/dev/null; }
python=""
for candidate in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
  if command -v "$candidate" >/dev/null && ok_python "$candidate"; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  found="$(${PYTHON:-python3} --version 2>&1 || echo 'no python3')"
  fail "sandboxrun needs Python 3.11.4 or newer (found: $found)." \
    $'\n'"Install one (e.g. with pyenv or uv), or point PYTHON at it: PYTHON=python3.12 scripts/install.sh"
fi
for tool in git tar; do
  command -v "$tool" >/dev/null || fail "sandboxrun needs $tool on PATH; install it first."
done
done_step "$("$python" --version 2>&1)"
command -v zstd >/dev/null || echo "      note: zstd not found; --compression zstd will be unavailable (gzip works)."

step "Creating the virtualenv .venv"
if [ -x .venv/bin/python ] && ok_python .venv/bin/python; then
  done_step "already there"
else
  # none yet, or one made by a Python too old for sandboxrun: (re)make it
  rm -rf .venv
  "$python" -m venv .venv || fail "could not create .venv (on Debian/Ubuntu: sudo apt-get install python3-venv)."
  done_step
fi

step "Installing sandboxrun and its dependencies into .venv (about a minute the first time)"
# The install is editable: only a changed pyproject.toml (dependencies) needs pip again.
stamp="$(cksum < pyproject.toml)"
if [ -f .venv/install.stamp ] && [ "$(cat .venv/install.stamp)" = "$stamp" ] \
  && .venv/bin/sandboxrun --version >/dev/null 2>&1; then
  done_step "already up to date: $(.venv/bin/sandboxrun --version)"
else
  # pip's chatter goes to a log; shown only if the install fails.
  if ! with_dots .venv/install.log .venv/bin/python -m pip install --disable-pip-version-check -e .; then
    echo " failed"
    tail -n 30 .venv/install.log >&2
    echo "Installing sandboxrun failed (full log: $here/.venv/install.log)." >&2
    exit 1
  fi
  .venv/bin/sandboxrun --version >/dev/null || fail "the installed sandboxrun does not start (see .venv/install.log)."
  echo "$stamp" > .venv/install.stamp
  done_step " $(.venv/bin/sandboxrun --version)"
fi

bin_dir="$HOME/.local/bin"
step "Linking the sandboxrun command into $bin_dir"
mkdir -p "$bin_dir"
ln -sf "$here/.venv/bin/sandboxrun" "$bin_dir/sandboxrun"
done_step

step "Checking bubblewrap (it confines the agent of --backend local)"
if bwrap_out="$("$here/scripts/install_bwrap.sh" 2>&1)"; then
  done_step "${bwrap_out##*$'\n'}"
else
  done_step "not installed"
  echo "$bwrap_out" | sed 's/^/      /'
  echo "      note: without bubblewrap, --backend local refuses to run (unless --no-isolation)."
fi

if [ "$with_claude" = 1 ]; then
  step "Installing Claude Code (npm)"
  if command -v claude >/dev/null; then
    done_step "already installed: $(claude --version 2>/dev/null || echo '?')"
  else
    command -v npm >/dev/null || fail "--with-claude needs Node.js and npm."
    # Newer releases need Node >= 22; this pin runs on Node 20 too.
    if ! with_dots .venv/claude-install.log \
      npm install -g --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION:-2.1.330}"; then
      echo " failed"; tail -n 30 .venv/claude-install.log >&2; exit 1
    fi
    done_step
  fi
fi

echo
echo "sandboxrun is installed: $bin_dir/sandboxrun"
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *)
    # The exact line for the user's login shell, so `sandboxrun` is found in new terminals.
    echo
    echo "$bin_dir is not on your PATH. Add it for new terminals with:"
    case "$(basename "${SHELL:-sh}")" in
      zsh) echo "  echo 'export PATH=\"\$HOME/.local/bin:\$PATH\"' >> ~/.zshrc" ;;
      bash) echo "  echo 'export PATH=\"\$HOME/.local/bin:\$PATH\"' >> ~/.bashrc" ;;
      fish) echo "  fish_add_path ~/.local/bin" ;;
      *) echo "  echo 'export PATH=\"\$HOME/.local/bin:\$PATH\"' >> ~/.profile" ;;
    esac
    echo "and for this terminal:"
    case "$(basename "${SHELL:-sh}")" in
      fish) echo "  set -gx PATH ~/.local/bin \$PATH" ;;
      *) echo "  export PATH=\"\$HOME/.local/bin:\$PATH\"" ;;
    esac
    ;;
esac
echo
echo "Try it without any API key, from inside a git repository:"
echo "  sandboxrun run --backend local --dry-run --prompt 'hello'"
