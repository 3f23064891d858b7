"""Rebuilding the agent's work on the local branch from git objects, checked before it lands.

The sandbox sends a git pack (see :mod:`sandboxrun.sandbox.collect`): its commits since the
baseline, the tree of whatever it left uncommitted, and the baseline's trees (no blobs). Nothing
in it is trusted. The pack goes into a *quarantine* object store under the session's artifacts
(``objects/``, chained to the repository's own store by ``GIT_ALTERNATE_OBJECT_DIRECTORIES``);
``git index-pack`` verifies every object's hash on the way in. Then, without touching any
worktree, index or ref:

1. every change of every commit (``git diff-tree``, no rename guessing) and of the leftover tree
   is checked with :func:`~sandboxrun.sync.patchcheck.check_changes`; a path is also refused when
   the branch's version is not the one the sandbox was given (a file kept out of the upload);
2. each commit is rebuilt on the local branch with a private index (``read-tree`` of the
   parent, ``update-index`` of the accepted changes, ``write-tree``) and written with its own
   message, author, committer and dates byte for byte (``hash-object -t commit``): empty
   commits and merges (with the changes made in the merge itself) stay what they were;
3. when the history cannot be replayed (no git in the sandbox, HEAD rewritten so the baseline
   is gone, a parent from outside the run) one commit of the tree difference is built instead,
   and :attr:`Plan.why_squashed` says why;
4. refused paths are left out everywhere and kept as ``refused.diff`` for a later
   ``sandboxrun apply --allow-sensitive`` (or ``--allow-claimed``: files another session holds
   an exclusive claim on are held back the same way).

The result is a :class:`Plan`: commits that exist only in the quarantine. Landing them
atomically is :mod:`sandboxrun.sandbox.apply`'s job.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandboxrun.coord.claims import CLAIMED_REASON
from sandboxrun.errors import PatchRejectedError
from sandboxrun.gitops import FALLBACK_IDENTITY, identity_env
from sandboxrun.process import run
from sandboxrun.redact import Redactor
from sandboxrun.sync.patchcheck import (
    SENSITIVE_REASON,
    SYMLINK_MODE,
    FileChange,
    check_changes,
    norm_component,
)

# The collection directory's report and object store: defined in .quarantine, and still
# importable from here under their old names.
from sandboxrun.sync.quarantine import BASELINE_PACK as BASELINE_PACK
from sandboxrun.sync.quarantine import GIT_OPTS as GIT_OPTS
from sandboxrun.sync.quarantine import MANIFEST as MANIFEST
from sandboxrun.sync.quarantine import WORK_PACK as WORK_PACK
from sandboxrun.sync.quarantine import Manifest as Manifest
from sandboxrun.sync.quarantine import Quarantine as Quarantine
from sandboxrun.sync.submodule_changes import (
    GITLINK_MODE,
    keep_submodule_changes,
    write_submodule_patches,
)

ZERO = "0" * 40
LEFTOVER_MESSAGE = "sandboxrun: uncommitted changes left by the agent"
SQUASH_MESSAGE = "sandboxrun: the agent's work as one commit"
REFUSED_PATCH = "refused.diff"
#: refusals a later ``sandboxrun apply --allow-sensitive / --allow-claimed`` may let through
_LATER_REASONS = (SENSITIVE_REASON, CLAIMED_REASON)
CONFLICT_REASON = (
    "the branch's version is not the one the sandbox was given (kept out of the upload, or "
    "changed on the branch)"
)
_GIT_OPTS = GIT_OPTS
# Commit headers we carry over; everything else (signatures now invalid, unknown headers) is
# dropped. Continuation lines (" ...") belong to the header before them.
_KEPT_HEADERS = (b"author", b"committer", b"encoding")


@dataclass
class Plan:
    """Commits built in the quarantine, ready to land on the branch (or nothing to do)."""

    old: str  # the commit the branch must be at
    new: str  # the commit it moves to (== old when nothing is applied)
    commits: list[str] = field(default_factory=list)  # new commits, oldest first
    why_squashed: str | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)
    kept_patch: Path | None = None  # refused changes that may be applied later
    warnings: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    mode_changes: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    #: submodule path -> the changed paths inside it (never applied: see sandbox/submodules.py)
    submodule_changes: dict[str, list[str]] = field(default_factory=dict)
    #: submodule path -> the patch file of those changes, relative to the submodule
    submodule_patches: dict[str, str] = field(default_factory=dict)

    @property
    def refused_paths(self) -> list[str]:
        """Each refused path once, in the order found."""
        return list(dict.fromkeys(p for p, _ in self.refused))


@dataclass
class _Change:
    """One entry of ``git diff-tree --raw``."""

    path: str
    old_mode: str
    new_mode: str
    old_sha: str
    new_sha: str
    status: str  # A / D / M / T


def _diff(q: Quarantine, a: str, b: str) -> list[_Change]:
    """Every path that differs between trees ``a`` and ``b`` (no renames, full names)."""
    raw = q.raw("diff-tree", "-r", "-z", "--raw", "--no-renames", "--no-abbrev", a, b)
    fields = raw.split(b"\0")
    out = []
    for meta, name in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, old_sha, new_sha, status = meta[1:].decode().split()
        out.append(_Change(os.fsdecode(name), old_mode, new_mode, old_sha, new_sha, status[:1]))
    return out


def _file_change(q: Quarantine, ch: _Change) -> FileChange:
    kind = {"A": "added", "D": "deleted"}.get(ch.status, "modified")
    target = None
    if ch.new_mode == SYMLINK_MODE and kind != "deleted":
        target = os.fsdecode(q.raw("cat-file", "blob", ch.new_sha))
    return FileChange(
        path=ch.path,
        old_path=None if kind == "added" else ch.path,
        status=kind,
        old_mode=None if kind == "added" else ch.old_mode,
        new_mode=None if kind == "deleted" else ch.new_mode,
        symlink_target=target,
    )


def _build_tree(q: Quarantine, parent_tree: str, changes: list[_Change], skip: set[str]) -> str:
    """``parent_tree`` with ``changes`` (minus ``skip``) applied, through a private index."""
    q.git("read-tree", parent_tree)
    lines = []
    for ch in changes:
        if ch.path in skip:
            continue
        if ch.status == "D":
            lines.append(f"0 {ZERO}\t{ch.path}")
        else:
            lines.append(f"{ch.new_mode} {ch.new_sha}\t{ch.path}")
    if lines:
        data = b"".join(os.fsencode(line) + b"\0" for line in lines)
        q.git("update-index", "-z", "--index-info", input=data)
    return q.git("write-tree").stdout.strip()


def _rewrite_commit(raw: bytes, tree: str, parents: list[str]) -> bytes | None:
    """The commit object ``raw`` on a new tree and parents; None when it is not a commit."""
    head, sep, message = raw.partition(b"\n\n")
    if not sep and not raw.endswith(b"\n"):
        return None
    kept: list[bytes] = []
    keep = False
    seen: set[bytes] = set()
    for line in head.split(b"\n"):
        if line.startswith(b" "):
            if keep:
                return None  # a multi-line author or committer: not something git writes
            continue
        name = line.split(b" ", 1)[0]
        keep = name in _KEPT_HEADERS
        if keep:
            if name in seen:
                return None
            seen.add(name)
            kept.append(line)
    if b"author" not in seen or b"committer" not in seen:
        return None
    lines = [f"tree {tree}".encode(), *(f"parent {p}".encode() for p in parents), *kept]
    return b"\n".join(lines) + b"\n\n" + message


def _write_commit(q: Quarantine, raw: bytes) -> str | None:
    res = q.git("hash-object", "-t", "commit", "-w", "--stdin", input=raw, check=False)
    return res.stdout.strip() if res.ok else None


def _new_commit(
    q: Quarantine, tree: str, parent: str, message: str, committer: tuple[str, str] | None
) -> str:
    env_extra = identity_env(q.worktree, committer or FALLBACK_IDENTITY)
    saved = dict(q.env)
    q.env.update(env_extra)
    try:
        return q.git("commit-tree", tree, "-p", parent, "-F", "-", input=message).stdout.strip()
    finally:
        q.env = saved


def _symlink_problems(q: Quarantine, tree: str, links: list[str]) -> list[tuple[str, str]]:
    """Follow new symlinks through the final tree's other symlinks: a chain may leave it."""
    if not links:
        return []
    raw = q.raw("ls-tree", "-r", "-z", "--full-tree", tree)
    targets: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if meta.startswith(SYMLINK_MODE.encode()):
            sha = meta.split()[2].decode()
            targets[os.fsdecode(name)] = sha
    cache: dict[str, str] = {}

    def target(path: str) -> str:
        if path not in cache:
            cache[path] = os.fsdecode(q.raw("cat-file", "blob", targets[path]))
        return cache[path]

    problems = []
    for link in links:
        parts = link.split("/")
        hops = 0
        bad = None
        pending = [*parts]
        done: list[str] = []
        while pending and bad is None:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    bad = "symlink chain resolves outside the repository"
                    break
                done.pop()
                continue
            done.append(part)
            if norm_component(part) in (".git", "git~1"):
                bad = "symlink chain resolves into .git"
                break
            here = "/".join(done)
            if here in targets:
                hops += 1
                if hops > 40:
                    bad = "symlink loop"
                    break
                dest = target(here)
                if dest.startswith("/"):
                    bad = f"symlink chain reaches an absolute path ({dest})"
                    break
                done.pop()
                pending = dest.split("/") + pending
        if bad:
            problems.append((link, bad))
    return problems


def build_plan(
    worktree: Path,
    directory: Path,
    old: str,
    *,
    allow_sensitive: bool = False,
    only_paths: set[str] | None = None,
    extra_sensitive: list[str] | None = None,
    committer: tuple[str, str] | None = None,
    leftover_message: str = LEFTOVER_MESSAGE,
    held: Callable[[Iterable[str]], Mapping[str, str]] | None = None,
) -> Plan:
    """Rebuild the collected work in ``directory`` on top of local commit ``old``.

    ``only_paths`` limits the plan to those paths (applying kept refusals later). ``held``
    names, of the paths the work touches, those to hold back and why (files another session
    claimed: :func:`sandboxrun.coord.claims.hold_back_check`); they are refused and kept like
    sensitive ones. Nothing outside ``directory/objects`` is written.
    """
    directory = Path(directory)
    manifest = Manifest.parse((directory / MANIFEST).read_text(errors="replace"))
    q = Quarantine(worktree, directory)
    # The final collection's one pack, or a checkpoint's several (each holding what the ones
    # before it did not), and the baseline's trees: every object verified by index-pack.
    for pack in sorted((q.objects / "pack").glob("*.pack")):
        q.add_pack(pack, pack.stem)
    plan = Plan(old=old, new=old)
    if not q.exists(f"{manifest.tree}^{{tree}}"):
        raise PatchRejectedError("the sandbox's final tree is missing from what it sent",
                                 "Nothing was applied.")  # fmt: skip
    if not q.exists(f"{manifest.base}^{{tree}}"):
        raise PatchRejectedError(
            "the baseline the sandbox started from is not kept, so its work cannot be compared",
            "Nothing was applied.",
        )
    base_tree = q.tree_of(manifest.base)
    old_tree = q.tree_of(old)

    # Which history, as (commit, parents) oldest first, or None to build one commit.
    history: list[tuple[str, list[str]]] | None = None
    why = manifest.why or None
    if manifest.mode == "history" and only_paths is None:
        listing = q.git("rev-list", "--topo-order", "--reverse", "--parents",
                        manifest.head, f"^{manifest.base}", check=False)  # fmt: skip
        if not listing.ok:
            why = "the sandbox's commits could not be read"
        else:
            history = []
            known = {manifest.base}
            for line in listing.stdout.splitlines():
                sha, *parents = line.split()
                if not parents or any(p not in known for p in parents):
                    why = f"commit {sha[:12]} has a parent from outside the run's history"
                    history = None
                    break
                history.append((sha, parents))
                known.add(sha)
    elif manifest.mode == "history":
        why = None  # a later apply of kept paths is one commit by design

    def net_steps() -> list[tuple[str, list[_Change]]]:
        return [("", _diff(q, base_tree, manifest.tree))]

    steps: list[tuple[str, list[_Change]]] = []  # (commit, or "" for the leftover / squash)
    if history is not None:
        for sha, parents in history:
            steps.append((sha, _diff(q, parents[0], sha)))
        head_tree = q.tree_of(manifest.head)
        if head_tree != manifest.tree:
            steps.append(("", _diff(q, head_tree, manifest.tree)))
    else:
        steps = net_steps()

    late: list[tuple[str, str]] = []  # symlink chains found after building
    for _attempt in range(3):
        if only_paths is not None:
            steps = [(s, [c for c in chs if c.path in only_paths]) for s, chs in steps]
        _check_into(q, plan, steps, old_tree, base_tree, allow_sensitive, extra_sensitive, late)
        if held is not None:  # claimed by another session: held back like sensitive paths
            refused = set(plan.refused_paths)
            touched = sorted({c.path for _, chs in steps for c in chs} - refused)
            plan.refused += list(held(touched).items())
        skip = set(plan.refused_paths)
        built: list[str] | str | None = None
        if history is not None:
            built = _build_history(q, history, steps, manifest, old, old_tree, skip,
                                   leftover_message, committer)  # fmt: skip
            if isinstance(built, str):
                why, history, built = built, None, None
                steps = net_steps()
                continue
        if built is None:
            message = SQUASH_MESSAGE
            if only_paths is not None:
                message = "sandboxrun: changes kept back at collection, applied on request"
            elif why:
                message += f"\n\nOne commit instead of the agent's own history: {why}."
            tree = _build_tree(q, old_tree, steps[0][1] if steps else [], skip)
            commits = (
                [_new_commit(q, tree, old, message + "\n", committer)] if tree != old_tree else []
            )
            built = commits
        assert isinstance(built, list)
        plan.commits = built
        plan.new = built[-1] if built else old
        links = [c.path for _, chs in steps for c in chs
                 if c.new_mode == SYMLINK_MODE and c.status != "D" and c.path not in skip]  # fmt: skip
        problems = _symlink_problems(q, q.tree_of(plan.new), links) if plan.new != old else []
        if not problems:
            break
        late.extend(problems)
    else:
        raise PatchRejectedError("symlink checks did not settle; nothing was applied")
    plan.why_squashed = why if (history is None and only_paths is None) else None
    _kept_patch(q, plan, manifest, base_tree)
    plan.submodule_patches = write_submodule_patches(
        q.raw, q.directory, plan.submodule_changes, manifest.tree, base_tree
    )
    if plan.new != old:
        _stats(q, plan)
    return plan


_Steps = list[tuple[str, list[_Change]]]


def _check_into(q: Quarantine, plan: Plan, steps: _Steps, old_tree: str, base_tree: str,
                allow_sensitive: bool, extra_sensitive: list[str] | None,
                late: list[tuple[str, str]]) -> None:  # fmt: skip
    """Fill the plan's refusals, warnings and mode changes from every change of every step."""
    all_changes = [c for _, chs in steps for c in chs]
    check = check_changes([_file_change(q, c) for c in all_changes],
                          allow_sensitive=allow_sensitive,
                          extra_sensitive=extra_sensitive or [])  # fmt: skip
    plan.refused = [*check.refused, *late]
    plan.warnings = list(check.warnings)
    plan.sensitive = list(check.sensitive)
    plan.mode_changes = []
    touched = {c.path for c in all_changes}
    plan.submodule_changes = {}
    if touched and old_tree != base_tree:
        refused = set(plan.refused_paths)
        base_changes = _diff(q, old_tree, base_tree)
        gitlinks = [c.path for c in base_changes if c.old_mode == GITLINK_MODE]
        plan.submodule_changes = keep_submodule_changes(plan.refused, gitlinks, touched, refused)
        for c in base_changes:
            if c.path in touched and c.path not in refused:
                plan.refused.append((c.path, CONFLICT_REASON))
    for c in all_changes:
        if c.status not in ("A", "D") and c.old_mode != c.new_mode:
            note = f"{c.path}: mode {c.old_mode} -> {c.new_mode}"
            if note not in plan.mode_changes:
                plan.mode_changes.append(note)


def _build_history(q: Quarantine, history: list[tuple[str, list[str]]], steps: _Steps,
                   manifest: Manifest, old: str, old_tree: str, skip: set[str],
                   leftover_message: str,
                   committer: tuple[str, str] | None) -> list[str] | str:  # fmt: skip
    """Rebuild each commit on the local branch; a string says why it cannot be done."""
    mapped = {manifest.base: old}
    trees = {manifest.base: old_tree}
    commits = []
    for (sha, parents), (_, changes) in zip(history, steps, strict=False):
        tree = _build_tree(q, trees[parents[0]], changes, skip)
        raw = _rewrite_commit(q.raw("cat-file", "commit", sha), tree, [mapped[p] for p in parents])
        new = _write_commit(q, raw) if raw is not None else None
        if new is None:
            return f"commit {sha[:12]} is not a commit git can rewrite"
        mapped[sha], trees[sha] = new, tree
        commits.append(new)
    if len(steps) > len(history):
        tree = _build_tree(q, trees[manifest.head], steps[-1][1], skip)
        if tree != trees[manifest.head]:
            leftover = _new_commit(
                q, tree, mapped[manifest.head], leftover_message + "\n", committer
            )
            commits.append(leftover)
    return commits


def _kept_patch(q: Quarantine, plan: Plan, manifest: Manifest, base_tree: str) -> None:
    """Write the refused changes that could be applied later as a git diff."""
    target = q.directory / REFUSED_PATCH
    target.unlink(missing_ok=True)
    from sandboxrun.sync.patchcheck import _path_problem

    # Only what --allow-sensitive or --allow-claimed can let through: never-allowed changes
    # are not kept for use.
    reasons: dict[str, list[str]] = {}
    for path, reason in plan.refused:
        reasons.setdefault(path, []).append(reason)
    paths = [
        p
        for p, rs in reasons.items()
        if _path_problem(p) is None and all(r.startswith(_LATER_REASONS) for r in rs)
    ]
    if not paths:
        return
    data = q.raw("diff", "--binary", "--full-index", "--no-renames", "--no-ext-diff",
                 "--no-textconv", "--no-color", base_tree, manifest.tree, "--",
                 *(f":(literal){p}" for p in paths))  # fmt: skip
    if data:
        # For reading: credential values of ours are masked here, like in every stored
        # artifact. `sandboxrun apply` lands the refused changes from the objects, unmasked.
        target.write_bytes(Redactor.from_env(os.environ).bytes(data))
        plan.kept_patch = target


def _stats(q: Quarantine, plan: Plan) -> None:
    """Files changed (a rename counts once), insertions and deletions, as ``git diff`` says."""
    raw = q.raw("diff", "--numstat", "-z", "-M", "--no-textconv", "--no-ext-diff",
                plan.old, plan.new)  # fmt: skip
    fields = raw.split(b"\0")
    i = 0
    while i < len(fields):
        parts = fields[i].split(b"\t", 2)
        i += 1
        if len(parts) != 3:
            continue
        name = parts[2]
        if not name:  # a rename: "ins\tdel\t\0old\0new\0"
            name = fields[i + 1] if i + 1 < len(fields) else b""
            i += 2
        plan.insertions += int(parts[0]) if parts[0].isdigit() else 0  # "-" for binary files
        plan.deletions += int(parts[1]) if parts[1].isdigit() else 0
        plan.files_changed.append(os.fsdecode(name))


def hooks_path_pattern(worktree: Path) -> list[str]:
    """core.hooksPath as a sensitive pattern when it points inside the worktree (husky does)."""
    res = run(["git", "config", "--path", "--get", "core.hooksPath"], cwd=worktree, check=False)
    value = res.stdout.strip()
    if not res.ok or not value:
        return []
    if os.path.isabs(value):
        try:
            value = os.path.relpath(os.path.realpath(value), os.path.realpath(worktree))
        except ValueError:
            return []
    value = posixpath.normpath(value.replace(os.sep, "/"))
    if value in (".", "..") or value.startswith("../"):
        return []
    return [value + "/"]
