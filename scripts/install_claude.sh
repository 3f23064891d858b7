#!/usr/bin/env bash
# Install the pinned Claude Code CLI for the end-to-end tests, once, outside the repo.
#
# Usage:  scripts/install_claude.sh            # prints the claude binary's path on its last line
#         export SANDBOXRUN_TEST_CLAUDE="$(scripts/install_claude.sh)"
#
# stdout carries only the path (or nothing when the install is unavailable); progress and
# errors go to stderr. The path is also written to $CACHE/claude-code-$VERSION.path.
#
# It never fails its caller because of the network: when the npm registry can't be reached
# (or npm is missing) it prints "claude install unavailable: REASON" to stderr, writes REASON
# to $CACHE/claude-code-$VERSION.unavailable and exits 0, so the e2e tests report SKIPPED with
# that reason instead of failing (or, worse, passing without having run).
#
# Environment:
#   SANDBOXRUN_TEST_CACHE                 cache root (default: $HOME/.cache/sandboxrun-test)
#   SANDBOXRUN_CLAUDE_INSTALL_TIMEOUT     seconds allowed for npm install (default: 900)
set -euo pipefail

# Pinned: on Node 20 an unpinned install resolves to an old release (newer ones declare
# engines node>=22 yet run fine), and the tests check this exact version's behaviour.
VERSION="2.1.330"
PACKAGE="@anthropic-ai/claude-code@${VERSION}"
CACHE="${SANDBOXRUN_TEST_CACHE:-$HOME/.cache/sandboxrun-test}"
DIR="${CACHE}/claude-code-${VERSION}"
BIN="${DIR}/bin/claude"
PATH_FILE="${CACHE}/claude-code-${VERSION}.path"
MARKER="${CACHE}/claude-code-${VERSION}.unavailable"
TIMEOUT="${SANDBOXRUN_CLAUDE_INSTALL_TIMEOUT:-900}"

log() { printf '%s\n' "install_claude: $*" >&2; }

installed() {
    # The version line looks like "2.1.330 (Claude Code)".
    [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "^${VERSION//./\\.}\b"
}

succeed() {
    rm -f "$MARKER"
    printf '%s\n' "$BIN" >"$PATH_FILE"
    printf '%s\n' "$BIN"
    exit 0
}

unavailable() {
    local reason="$*"
    printf '%s\n' "$reason" >"$MARKER"
    rm -f "$PATH_FILE"
    printf '%s\n' "claude install unavailable: ${reason}" >&2
    exit 0
}

mkdir -p "$CACHE"
installed && succeed

# Serialize concurrent installs (parallel CI jobs sharing a cache) on a lock in the cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${CACHE}/.install-claude.lock"
    flock 9
    installed && succeed
fi

command -v npm >/dev/null 2>&1 || unavailable "npm not found on PATH (Node.js is needed to install ${PACKAGE})"

# A quick look-up first: an unreachable registry otherwise costs a minute of npm retries.
probe=$(timeout 60 npm view "$PACKAGE" version --fetch-retries=0 --fetch-timeout=20000 2>&1) || true
if [[ "$probe" != *"$VERSION"* ]]; then
    code=$(grep -m1 -oE 'E[A-Z0-9_]{3,}' <<<"$probe" || true)
    unavailable "npm registry unreachable or ${PACKAGE} not found (${code:-$(tail -n1 <<<"$probe")})"
fi

# Install into a staging dir and rename, so a half-finished install never looks installed.
STAGE="$(mktemp -d "${CACHE}/.claude-code-${VERSION}.XXXXXX")"
trap 'rm -rf "$STAGE" "${STAGE}.npm.log"' EXIT
NPM_LOG="${STAGE}.npm.log"
log "installing ${PACKAGE} into ${DIR} (~245 MB download, ~365 MB on disk)"
start=$(date +%s)
status=0
# engine-strict off: the package says node>=22 but runs on Node 20 (checked below anyway).
timeout "$TIMEOUT" npm install --prefix "$STAGE" --no-audit --no-fund --no-save \
    --engine-strict=false --fetch-retries=2 --fetch-timeout=120000 "$PACKAGE" \
    >"$NPM_LOG" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
    tail -n 20 "$NPM_LOG" >&2 || true
    code=$(grep -m1 -oE 'npm error code [A-Z0-9_]+' "$NPM_LOG" | awk '{print $4}' || true)
    reason="npm install ${PACKAGE} failed (exit ${status}${code:+, ${code}})"
    [[ $status -eq 124 ]] && reason="npm install ${PACKAGE} timed out after ${TIMEOUT}s"
    unavailable "$reason"
fi
rm -f "$NPM_LOG"

# The package's postinstall puts the native binary at bin/claude.exe; fall back to npm's shim.
real="${STAGE}/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
[[ -x "$real" ]] || real="${STAGE}/node_modules/.bin/claude"
[[ -x "$real" ]] || unavailable "${PACKAGE} installed but no claude executable was found in it"
mkdir -p "${STAGE}/bin"
# A relative link keeps working after the staging dir is renamed.
ln -sfn "../${real#"${STAGE}/"}" "${STAGE}/bin/claude"

rm -rf "$DIR"
mv "$STAGE" "$DIR"
trap - EXIT
installed || unavailable "installed ${PACKAGE} but '${BIN} --version' does not print ${VERSION}"
log "installed ${PACKAGE} in $(($(date +%s) - start))s"
succeed
