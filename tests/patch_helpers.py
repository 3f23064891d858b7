"""Real git repositories for the patch tests: a "sandbox" repo and a local worktree to apply to.

The "sandbox" is a real sandbox of the local backend, and its patches come out of it through
the producer production uses for patches (``sandboxrun.sandbox.checkpoint.produce``, the
checkpoints that a lost sandbox's work is applied from): every patch test feeds what production
makes, with the same format-patch options and git settings.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from sandboxrun.config import Settings
from sandboxrun.sandbox.backends import Sandbox, get_backend
from sandboxrun.sandbox.backends.base import control_dir
from sandboxrun.sandbox.checkpoint import produce

AGENT = ("Agent Smith", "agent@sandbox.invalid")
LOCAL = ("Local User", "local@example.invalid")


def git(cwd: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run git in ``cwd`` and return its stdout; fail the test on a non-zero exit."""
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr.decode()}"
    return proc.stdout


def out(cwd: Path, *args: str) -> str:
    """git's stdout as stripped text."""
    return git(cwd, *args).decode().strip()


@dataclass
class Repos:
    """A sandbox repo with a baseline commit, and a local worktree whose HEAD tree equals it."""

    sandbox: Path  # the repository inside the local sandbox below
    base: str
    local: Path  # the main repository
    worktree: Path  # a linked worktree on branch sandboxrun/test
    box: Sandbox  # the local backend's sandbox holding ``sandbox``

    def produce(self) -> tuple[bytes, bytes]:
        """The agent's commits (mbox) and leftovers (diff), made by production's producer."""
        session = SimpleNamespace(sandbox_base=self.base)
        produce(self.box, session, None, "test-patches")  # type: ignore[arg-type]
        out = f"{control_dir(self.box)}/test-patches"
        return self.box.read_file(f"{out}/commits.mbox"), self.box.read_file(f"{out}/changes.diff")

    def sandbox_tree(self) -> str:
        """The tree of everything in the sandbox, committed or not (after ``produce``)."""
        git(self.sandbox, "add", "-A")
        return out(self.sandbox, "write-tree")

    def head(self) -> str:
        return out(self.worktree, "rev-parse", "HEAD")

    def status(self) -> str:
        return out(self.worktree, "status", "--porcelain", "--untracked-files=all")

    def commit_in_sandbox(self, message: str) -> None:
        git(self.sandbox, "add", "-A")
        git(self.sandbox, "commit", "-q", "-m", message)


def make_repos(tmp: Path, files: dict[str, bytes | str], *, local_identity: bool = True) -> Repos:
    """Create the sandbox repo with ``files`` as its baseline, and the local side to apply to."""
    backend = get_backend("local", Settings(home=tmp / "sbr-home"))
    box = backend.create("patch-test", timeout_s=600, env={}, metadata={})
    sandbox, local, worktree = Path(box.repo_dir), tmp / "local", tmp / "wt"
    sandbox.mkdir(parents=True, exist_ok=True)
    Path(box.home, ".sandboxrun").mkdir(exist_ok=True)  # the control directory
    git(sandbox, "init", "-q", "-b", "main")
    git(sandbox, "config", "user.name", AGENT[0])
    git(sandbox, "config", "user.email", AGENT[1])
    for name, data in files.items():
        write(sandbox / name, data)
    git(sandbox, "add", "-A")
    git(sandbox, "commit", "-q", "-m", "baseline")
    base = out(sandbox, "rev-parse", "HEAD")
    git(tmp, "clone", "-q", str(sandbox), str(local))
    if local_identity:
        git(local, "config", "user.name", LOCAL[0])
        git(local, "config", "user.email", LOCAL[1])
    git(local, "worktree", "add", "-q", "--no-track", "-b", "sandboxrun/test", str(worktree))
    return Repos(sandbox=sandbox, base=base, local=local, worktree=worktree, box=box)


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def added(name: str, content: str = "x", mode: str = "100644") -> bytes:
    """A hand-made git diff that creates ``name`` (as it appears after ``a/``/``b/``)."""
    lines = [
        f"diff --git a/{name} b/{name}",
        f"new file mode {mode}",
        "--- /dev/null",
        f"+++ b/{name}",
        "@@ -0,0 +1 @@",
        f"+{content}",
    ]
    if mode == "120000":  # symlink targets have no trailing newline
        lines.append("\\ No newline at end of file")
    return ("\n".join(lines) + "\n").encode()


def as_mail(diff: bytes, subject: str = "innocent change") -> bytes:
    """Wrap a hand-made diff into a mail shaped like the collector's (mboxrd, no signature)."""
    head = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {AGENT[0]} <{AGENT[1]}>\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\n---\n"
    )
    return head.encode() + diff + b"\n"
