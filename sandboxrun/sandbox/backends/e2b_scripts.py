"""The shell programs sandboxrun runs inside an E2B sandbox, kept apart from the SDK calls.

Each is a fixed script; arguments reach it only as ``"$@"`` (see ``e2b._script``), so no user
text is ever interpreted by a shell. ``MARK`` separates a script's own output from whatever a
login shell prints first.
"""

from __future__ import annotations

MARK = "@@sandboxrun@@"
_MARK = MARK  # the scripts below interpolate it

# `exec`: run "$@" with stdin from /dev/null; stdout and stderr come back base64-encoded after
# a marker, so bytes survive the SDK's text decoding and login-shell chatter is skipped.
_EXEC_SCRIPT = rf"""
e=$(mktemp) || exit 125
printf '{_MARK}'
"$@" 2>"$e" | base64 -w0
c=${{PIPESTATUS[0]}}
printf '{_MARK}' >&2
base64 -w0 "$e" >&2
rm -f -- "$e"
exit "$c"
"""

# `start_detached` (the short command we wait for): check the program exists, launch the
# wrapper (base.DETACH_WRAPPER, passed in as $SBR_WRAPPER) with setsid + nohup (new session =
# own process group, immune to hangups, not a child of this command's shell once it exits),
# wait for its pid file and print it.
# `setsid -f` forks by itself: a shell's `cmd &` would start the agent with SIGINT ignored
# (POSIX, for background jobs without job control), and INT is our gentle stop. The `&` form
# is the fallback for a setsid without -f (busybox), where a stop escalates to TERM.
_LAUNCH_SCRIPT = rf"""
command -v -- "$1" >/dev/null 2>&1 || {{ printf '{_MARK}NOAGENT'; exit 127; }}
rm -f -- "$SBR_PID_PATH" "$SBR_EXIT_PATH"
if setsid -f true >/dev/null 2>&1; then
  setsid -f nohup /bin/sh -c "$SBR_WRAPPER" sh "$@" </dev/null >/dev/null 2>&1
else
  setsid nohup /bin/sh -c "$SBR_WRAPPER" sh "$@" </dev/null >/dev/null 2>&1 &
fi
i=0
until [ -s "$SBR_PID_PATH" ]; do
  i=$((i + 1))
  [ "$i" -gt 2000 ] && {{ printf '{_MARK}NOPID'; exit 1; }}
  sleep 0.01
done
printf '{_MARK}PID %s' "$(cat -- "$SBR_PID_PATH")"
"""

# `read_file` from an offset: report the size first so a big delta is downloaded as a file.
_READ_SCRIPT = rf"""
f="$1"; off="$2"
[ -f "$f" ] || {{ printf '{_MARK}MISSING'; exit 0; }}
size=$(stat -c %s -- "$f") || exit 1
if [ "$size" -le "$off" ]; then printf '{_MARK}EMPTY'; exit 0; fi
if [ $((size - off)) -gt "$3" ]; then
  tail -c +$((off + 1)) -- "$f" > "$4" && printf '{_MARK}FILE'
  exit
fi
printf '{_MARK}DATA'
tail -c +$((off + 1)) -- "$f" | base64 -w0
"""

# `download_to` a piece: bytes "$2".. of "$1" ("$3" of them, 0: to the end) into "$4".
_PIECE_SCRIPT = rf"""
[ -f "$1" ] || {{ printf '{_MARK}MISSING'; exit 0; }}
if [ "$3" -gt 0 ]; then
  tail -c +$(($2 + 1)) -- "$1" | head -c "$3" > "$4" || exit 1
else
  tail -c +$(($2 + 1)) -- "$1" > "$4" || exit 1
fi
printf '{_MARK}OK'
"""

# `upload_and_unpack`: the archive is decompressed once, to a plain tar beside the upload, and
# GNU tar itself then lists it (cheap: it seeks over a plain file's data) and must accept every
# member before anything is extracted — only regular files and directories (first character of
# the `tar -tv` mode column), no absolute names, no `..` or `.git` components (any case), and a
# listing without errors — then the very same file is extracted, without owners. One parser
# decides both what is checked and what is written. GNU tar escapes odd characters in
# listings, so a newline in a name cannot forge a line.
#
# Creating files is most of the cost and scales with CPUs, so a big archive is extracted by
# one tar per CPU (up to 4), each taking whole top-level entries: bins 1.. take plainly named
# ones (`-T`, taken verbatim: no name is ever read as an option), bin 0 everything else
# (`--exclude` of those, anchored). The split is proven before use: the bins' own listings,
# put together, must be exactly the archive's listing; otherwise, or if a bin fails, one tar
# extracts it all.
_UNPACK_SCRIPT = r"""
set -o pipefail
t="$1"; d="$2"; u="$t"
trap 'rm -f -- "$t" "$t".*' EXIT
case "$3" in
  gzip) dc=(gzip -dc) ;;
  zstd) dc=(zstd -dcq) ;;
  none) dc=() ;;
  *) echo "unknown compression: $3" >&2; exit 64 ;;
esac
if [ "${#dc[@]}" -gt 0 ]; then
  u="$t.plain"
  "${dc[@]}" -- "$t" > "$u" || { echo "cannot decompress the archive" >&2; exit 65; }
  rm -f -- "$t"
fi
bad=$(tar -tvf "$u" | awk '{ c = substr($0, 1, 1); if (c != "-" && c != "d") { n++; if (n <= 5) print } } END { exit n > 0 }')
st=$?
if [ "$st" -eq 1 ]; then printf 'links or special files:\n%s\n' "$bad" >&2; exit 66; fi
if [ "$st" -ne 0 ]; then echo "cannot read the archive" >&2; exit 65; fi
tar -tf "$u" > "$t.names" || { echo "cannot read the archive" >&2; exit 65; }
bad=$(awk '{ s = tolower($0); if (s ~ /^\// || s ~ /(^|\/)\.\.(\/|$)/ || s ~ /(^|\/)\.git(\/|$)/) { n++; if (n <= 5) print } } END { exit n > 0 }' "$t.names")
if [ "$?" -ne 0 ]; then printf 'unsafe names:\n%s\n' "$bad" >&2; exit 66; fi
mkdir -p -- "$d"
n=$(nproc 2>/dev/null) || n=1
[ "$n" -gt 4 ] && n=4
if [ "$n" -gt 1 ] && [ "$(wc -l < "$t.names")" -ge 500 ] && awk -v n="$n" -v out="$t" '
  { i = index($0, "/"); g = i ? substr($0, 1, i - 1) : $0; if (!(g in cnt)) order[++k] = g; cnt[g]++ }
  END {
    safe = "^[A-Za-z0-9_][A-Za-z0-9._+@=,-]*$"
    for (j = 1; j <= k; j++) if (order[j] !~ safe) load[0] += cnt[order[j]]
    for (j = 1; j <= k; j++) {
      g = order[j]; if (g !~ safe) continue
      b = 0; for (x = 1; x < n; x++) if (load[x] < load[b]) b = x
      load[b] += cnt[g]
      if (b > 0) { print g > (out ".part" b); print g > (out ".excl") }
    }
    for (x = 1; x < n; x++) if (!load[x]) exit 1
  }' "$t.names"; then
  bin() {
    local b="$1"; shift
    if [ "$b" -eq 0 ]; then tar "$@" --anchored --no-wildcards -X "$t.excl"
    else tar "$@" --no-wildcards --verbatim-files-from -T "$t.part$b"; fi
  }
  for ((b = 0; b < n; b++)); do bin "$b" -tf "$u" || exit 1; done | LC_ALL=C sort > "$t.split" \
    && LC_ALL=C sort "$t.names" | cmp -s - "$t.split"
  if [ "$?" -eq 0 ]; then
    pids=()
    for ((b = 0; b < n; b++)); do bin "$b" -xf "$u" -C "$d" --no-same-owner & pids+=($!); done
    ok=0
    for p in "${pids[@]}"; do wait "$p" || ok=1; done
    [ "$ok" -eq 0 ] && exit 0
    echo "extracting in parallel failed; extracting in one pass" >&2
  fi
fi
tar -xf "$u" -C "$d" --no-same-owner
"""

# `upload_and_checkout`: a cold upload made of git objects (`sync/gitupload.py`): "$1" the
# uploaded pack, "$2" the repository to make, "$3" the baseline tree (its id computed on our
# side from the manifest of the files to upload). `index-pack --strict` checks every object
# (its id is the hash of its bytes; git's fsck rules for trees: no `.git`, `..` or `/` in a
# name). `read-tree` of that id (so only the tree we built, whatever else the pack holds;
# git's own verify_path refuses `.git` and `..` components again) fills the index; before
# anything is written, every entry must be a regular file (100644/100755: no link, no
# submodule) with a name passing the tar path's rules. Then `checkout-index` writes the files
# (in parallel: checkout.workers) and records their stat data, and the baseline commit is
# made of that tree (nothing is hashed again). No hooks run (none of these commands has any).
_CHECKOUT_SCRIPT = r"""
set -o pipefail
p="$1"; d="$2"; tree="$3"
trap 'rm -f -- "$p"' EXIT
mkdir -p -- "$d" && cd -- "$d" || exit 1
git init -q || exit 1
git config user.name "Claude (sandboxrun)"
git config user.email "agent@sandboxrun.invalid"
git config commit.gpgsign false
if ! err=$(git -c core.fsync=none index-pack --strict --stdin < "$p" 2>&1 > /dev/null); then
  case "$err" in
    *"fsck error"*) printf 'objects failing git'"'"'s checks:\n%s\n' "$err" | head -n 6 >&2; exit 66 ;;
    *) printf 'the uploaded pack is damaged: %s\n' "$err" >&2; exit 65 ;;
  esac
fi
rm -f -- "$p"
[ "$(git cat-file -t "$tree" 2>/dev/null)" = tree ] || { echo "the pack lacks the tree $tree" >&2; exit 65; }
git read-tree "$tree" || { echo "unsafe names in the tree" >&2; exit 66; }
bad=$(git ls-files -s | awk '$1 != "100644" && $1 != "100755" { n++; if (n <= 5) print } END { exit n > 0 }')
if [ "$?" -ne 0 ]; then printf 'links or special files:\n%s\n' "$bad" >&2; exit 66; fi
bad=$(git -c core.quotepath=on ls-files | awk '{ s = tolower($0); if (s ~ /^"?\// || s ~ /(^"?|\/)\.\.(\/|"?$)/ || s ~ /(^"?|\/)\.git(\/|"?$)/) { n++; if (n <= 5) print } } END { exit n > 0 }')
if [ "$?" -ne 0 ]; then printf 'unsafe names:\n%s\n' "$bad" >&2; exit 66; fi
n=$(nproc 2>/dev/null) || n=1
[ "$n" -gt 8 ] && n=8
git -c checkout.workers="$n" -c checkout.thresholdForParallelism=100 -c core.fsync=none \
  checkout-index -a -u || exit 1
c=$(printf 'sandboxrun baseline\n' | git commit-tree "$tree") || exit 1
git update-ref HEAD "$c" || exit 1
printf '%s\n' "$c"
"""
