"""Collection and applying, class by class, through the production code on real git.

Each test builds a user's repository with a session worktree, a "sandbox" directory unpacked
from it with the runner's own baseline script, lets a hostile agent loose on the sandbox's
repository (plain git and shell, as an agent would), then collects with the production
script (:func:`collect_patches`) and applies with :func:`apply_collected`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandboxrun.config import Settings
from sandboxrun.errors import GitError
from sandboxrun.sandbox.apply import FAULT_ENV, apply_collected, expected_commit, load_state
from sandboxrun.sandbox.backends.local import LocalBackend, LocalSandbox
from sandboxrun.sandbox.gitpack import (
    collect_patches,
    known_blobs,
    save_artifacts,
    save_baseline,
    verify_artifacts,
)
from sandboxrun.sandbox.provision import BASELINE_SCRIPT

BRANCH = "sandboxrun/t"
AGENT_ENV = {
    "GIT_AUTHOR_NAME": "Agent Smith",
    "GIT_AUTHOR_EMAIL": "agent@sandbox.invalid",
    "GIT_AUTHOR_DATE": "2001-02-03T04:05:06+07:00",
    "GIT_COMMITTER_NAME": "Agent Committer",
    "GIT_COMMITTER_EMAIL": "committer@sandbox.invalid",
    "GIT_COMMITTER_DATE": "2002-03-04T05:06:07-01:00",
}
LOCAL_ENV = {
    "GIT_AUTHOR_NAME": "Local User",
    "GIT_AUTHOR_EMAIL": "local@example.invalid",
    "GIT_COMMITTER_NAME": "Local User",
    "GIT_COMMITTER_EMAIL": "local@example.invalid",
}


def run(cwd: Path, *argv: str, env: dict[str, str] | None = None, input: bytes | None = None,
        check: bool = True) -> str:  # fmt: skip
    proc = subprocess.run(list(argv), cwd=cwd, env={**os.environ, **(env or {})}, input=input,
                          capture_output=True, check=False)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"{argv} failed: {proc.stderr.decode()}"
    return proc.stdout.decode(errors="surrogateescape")


class Pipeline:
    """A user's repo + session worktree, and a sandbox made from it the way a run makes one."""

    def __init__(self, tmp: Path, files: dict[str, str | bytes]) -> None:
        self.tmp = tmp
        self.repo = tmp / "project"
        self.repo.mkdir()
        self.git_local("init", "-q", "-b", "main")
        for name, content in files.items():
            path = self.repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.git_local("add", "-A")
        self.git_local("commit", "-q", "-m", "initial")
        self.worktree = tmp / "wt"
        self.git_local("worktree", "add", "-q", "-b", BRANCH, str(self.worktree), "main")
        self.old = self.git_local("rev-parse", "HEAD").strip()
        # The sandbox: made by the local backend (confined with bwrap where it can be), the
        # tracked files unpacked, then the runner's baseline commit, as a run does.
        settings = Settings(home=tmp / "sbr-home")
        self.sandbox = LocalBackend(settings).create("t", timeout_s=600, env={}, metadata={})
        self.sb = Path(self.sandbox.repo_dir)
        self.sb.mkdir(parents=True)
        archive = tmp / "upload.tar"
        self.git_local("archive", "-o", str(archive), "HEAD")
        with tarfile.open(archive) as tar:
            tar.extractall(self.sb, filter="tar")
        res = self.sandbox.exec(["sh", "-c", BASELINE_SCRIPT, "sh", str(self.sb)])
        assert res.ok, res.error_text()
        self.session = SimpleNamespace(
            id="t", name="t", sandbox_base=res.text().strip().splitlines()[-1], options={},
            base_commit=self.old, branch=BRANCH, worktree=str(self.worktree),
        )  # fmt: skip
        self.artifacts = tmp / "artifacts"
        self.artifacts.mkdir()
        save_baseline(self.sandbox, self.session.sandbox_base, self.artifacts)

    def git_local(self, *args: str) -> str:
        return run(self.repo, "git", *args, env=LOCAL_ENV)

    def agent(self, *args: str, check: bool = True, input: bytes | None = None) -> str:
        """git in the sandbox, as the agent."""
        return run(self.sb, "git", *args, env=AGENT_ENV, check=check, input=input)

    def sh(self, script: str) -> str:
        return run(self.sb, "sh", "-c", script, env=AGENT_ENV)

    def write(self, name: str, content: str | bytes) -> None:
        path = self.sb / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    def collect(self) -> None:
        patches = collect_patches(self.sandbox, self.session, known=known_blobs(self.artifacts))
        save_artifacts(self.artifacts, patches)
        verify_artifacts(self.worktree, self.artifacts)

    def apply(self, **kw):
        expected = expected_commit(self.session, self.artifacts)
        return apply_collected(self.worktree, BRANCH, self.artifacts, expected, **kw)

    def tip(self) -> str:
        return self.git_local("rev-parse", BRANCH).strip()

    def show(self, rev: str, path: str) -> bytes:
        return subprocess.run(["git", "-C", str(self.repo), "show", f"{rev}:{path}"],
                              capture_output=True, check=True).stdout  # fmt: skip

    def files(self, rev: str = BRANCH) -> set[str]:
        out = subprocess.run(["git", "-C", str(self.repo), "ls-tree", "-r", "-z", "--name-only",
                              rev], capture_output=True, check=True).stdout  # fmt: skip
        return {os.fsdecode(n) for n in out.split(b"\0") if n}

    def clean(self) -> bool:
        return run(self.worktree, "git", "status", "--porcelain", "--untracked-files=all") == ""


@pytest.fixture
def p(tmp_path: Path) -> Pipeline:
    return Pipeline(tmp_path, {"README.md": "# project\n", "src/app.py": "print('hi')\n",
                               "tab\there.txt": "tab\n", "back\\slash.txt": "bs\n"})  # fmt: skip


def raw_commit(p: Pipeline, rev: str) -> bytes:
    out = subprocess.run(["git", "-C", str(p.repo), "cat-file", "commit", rev],
                         capture_output=True, check=True).stdout  # fmt: skip
    return out.split(b"\n", 1)[1].split(b"\n", 1)[1] if out.startswith(b"tree") else out


def _headers_and_message(p: Pipeline, repo: Path, rev: str) -> bytes:
    """author, committer, encoding and message of a commit: all but tree and parents."""
    out = subprocess.run(["git", "-C", str(repo), "cat-file", "commit", rev],
                         capture_output=True, check=True).stdout  # fmt: skip
    head, _, message = out.partition(b"\n\n")
    kept = [ln for ln in head.split(b"\n") if not ln.startswith((b"tree ", b"parent "))]
    return b"\n".join(kept) + b"\n\n" + message


# --- 1. Exact history -------------------------------------------------------------------------


def test_messages_authors_dates_empty_commits_come_back_exactly(p: Pipeline) -> None:
    """A '---' line, a fake diff in a message, odd whitespace, empty commits: all kept."""
    message = (
        "subject with trailing spaces   \n\nbody\n---\n"
        "diff --git a/evil.txt b/evil.txt\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/evil.txt\n@@ -0,0 +1 @@\n+pwned\n\n\n# not a comment\n"
    )
    p.write("a.txt", "a\n")
    p.agent("add", "-A")
    p.agent("commit", "-q", "--cleanup=verbatim", "-F", "-", input=message.encode())
    p.agent("commit", "-q", "--allow-empty", "-m", "an empty commit")
    p.agent("commit", "-q", "--allow-empty", "--allow-empty-message", "-m", "")
    p.collect()
    applied = p.apply()
    assert len(applied.commits) == 3
    sandbox_log = p.agent("rev-list", "--reverse", "HEAD", f"^{p.session.sandbox_base}").split()
    for ours, theirs in zip(applied.commits, sandbox_log, strict=True):
        assert _headers_and_message(p, p.repo, ours) == _headers_and_message(p, p.sb, theirs)
    assert "evil.txt" not in p.files()
    assert p.show(BRANCH + "~2", "a.txt") == b"a\n"
    assert p.clean()


def test_merges_keep_their_own_changes_and_conflict_resolutions(p: Pipeline) -> None:
    """An evil merge (changes made in the merge itself) and a resolved conflict come back."""
    p.agent("checkout", "-q", "-b", "side")
    p.write("README.md", "# side\n")
    p.agent("commit", "-q", "-am", "side edit")
    p.agent("checkout", "-q", "-")
    p.write("README.md", "# main\n")
    p.agent("commit", "-q", "-am", "main edit")
    assert p.agent("merge", "-q", "side", check=False) != "ok"  # conflicts
    p.write("README.md", "# resolved\n")
    p.write("made-in-merge.txt", "only in the merge commit\n")
    p.agent("add", "-A")
    p.agent("commit", "-q", "--no-edit")
    p.collect()
    applied = p.apply()
    assert len(applied.commits) == 3
    parents = p.git_local("rev-list", "--parents", "-n", "1", BRANCH).split()
    assert len(parents) == 3  # still a merge, of the two rebuilt branches
    assert p.show(BRANCH, "README.md") == b"# resolved\n"
    assert p.show(BRANCH, "made-in-merge.txt") == b"only in the merge commit\n"
    assert p.show(BRANCH + "^2", "README.md") == b"# side\n"


@pytest.mark.parametrize("how", ["amend-baseline", "reset-orphan", "reset-to-other-root"])
def test_rewritten_history_still_brings_the_final_tree(p: Pipeline, how: str) -> None:
    """History that no longer contains the baseline: one commit of the tree difference."""
    p.write("new.txt", "new\n")
    if how == "amend-baseline":
        p.agent("add", "-A")
        p.agent("commit", "-q", "--amend", "-m", "rewritten baseline")
    elif how == "reset-orphan":
        p.agent("checkout", "-q", "--orphan", "fresh")
        p.agent("add", "-A")
        p.agent("commit", "-q", "-m", "fresh start")
    else:
        p.agent("checkout", "-q", "--orphan", "other")
        p.agent("rm", "-rq", "--cached", ".")
        p.agent("commit", "-q", "--allow-empty", "-m", "root")
        p.agent("add", "-A")
        p.agent("commit", "-q", "-m", "on top")
    p.write("src/app.py", "print('changed')\n")
    p.collect()
    applied = p.apply()
    assert len(applied.commits) == 1
    assert "baseline" in (applied.record["why_squashed"] or "")
    body = p.git_local("log", "-1", "--format=%B", BRANCH)
    assert "One commit instead of the agent's own history" in body
    assert p.show(BRANCH, "new.txt") == b"new\n"
    assert p.show(BRANCH, "src/app.py") == b"print('changed')\n"
    assert p.show(BRANCH, "tab\there.txt") == b"tab\n"  # untouched files stay
    assert p.clean()


# --- 2. Broken git in the sandbox -------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage",
    [
        "rm -rf .git",
        "rm -f .git/HEAD && echo 'ref: refs/heads/nowhere' > .git/HEAD",
        "git checkout -q --orphan unborn",
        "rm -rf .git/objects && mkdir .git/objects",
        "mkdir -p .GIT sub/.Git && echo junk > .GIT/config && echo x > sub/.Git/y",
        "rm -rf .git && echo 'gitdir: /nonexistent' > .git",
    ],
)
def test_broken_git_falls_back_to_the_uploaded_baseline(p: Pipeline, breakage: str) -> None:
    p.write("src/app.py", "print('work')\n")
    p.write("added.txt", "added\n")
    os.remove(p.sb / "README.md")
    p.sh(breakage)
    p.collect()
    applied = p.apply()
    files = p.files()
    assert "added.txt" in files and "README.md" not in files
    assert p.show(BRANCH, "src/app.py") == b"print('work')\n"
    assert p.show(BRANCH, "tab\there.txt") == b"tab\n"
    assert not any(".git" in f.lower() for f in files)
    assert len(applied.commits) == 1
    assert p.clean()


# --- 3. Atomic apply --------------------------------------------------------------------------

_APPLY_CHILD = r"""
import sys
from pathlib import Path
from sandboxrun.sandbox.apply import apply_collected
apply_collected(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4])
"""


@pytest.mark.parametrize("step", ["objects", "journal", "ref", "worktree", "done"])
def test_sigkill_at_any_step_leaves_old_or_new_and_a_rerun_finishes(p: Pipeline,
                                                                    step: str) -> None:  # fmt: skip
    for i in range(30):
        p.write(f"many/f{i}.txt", f"{i}\n")
    p.agent("add", "-A")
    p.agent("commit", "-q", "-m", "many files")
    p.write("src/app.py", "print('leftover')\n")
    p.collect()
    old = p.tip()
    child = subprocess.run(
        [sys.executable, "-c", _APPLY_CHILD, str(p.worktree), BRANCH, str(p.artifacts), old],
        env={**os.environ, FAULT_ENV: step}, capture_output=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9, child.stderr.decode()
    tip = p.tip()
    gitdir = Path(run(p.worktree, "git", "rev-parse", "--absolute-git-dir").strip())
    assert not (gitdir / "rebase-apply").exists()
    assert tip == old or tip in load_state(p.artifacts).get("pending", {}).get("new", "")
    assert (tip == old) == (step in ("objects", "journal", "ref"))
    applied = p.apply()  # what `attach` / `sandboxrun apply` do next
    assert applied.resumed == (tip != old)
    assert "many/f29.txt" in p.files()
    assert p.show(BRANCH, "src/app.py") == b"print('leftover')\n"
    assert p.clean()
    assert (p.worktree / "many" / "f29.txt").read_text() == "29\n"
    assert p.git_local("rev-list", "--count", f"{old}..{BRANCH}").strip() == "2"


def test_a_branch_that_moved_is_never_built_on(p: Pipeline) -> None:
    p.write("work.txt", "agent\n")
    p.collect()
    (p.worktree / "user.txt").write_text("mine\n")
    run(p.worktree, "git", "add", "user.txt", env=LOCAL_ENV)
    run(p.worktree, "git", "commit", "-q", "-m", "user commit on the session branch",
        env=LOCAL_ENV)  # fmt: skip
    moved = p.tip()
    with pytest.raises(GitError) as info:
        p.apply()
    assert "user commit on the session branch" in info.value.message
    assert p.tip() == moved
    run(p.worktree, "git", "reset", "-q", "--keep", "HEAD~1")
    p.apply()
    assert "work.txt" in p.files() and "user.txt" not in p.files()


@pytest.mark.parametrize(
    "name", ["rebase-apply", "rebase-merge", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD"]
)
def test_a_worktree_in_the_middle_of_a_git_operation_is_never_applied_to(
    p: Pipeline, name: str
) -> None:
    p.write("work.txt", "agent\n")
    p.collect()
    # the session worktree's own git directory (a linked worktree: .git/worktrees/<name>)
    marker = p.worktree / run(p.worktree, "git", "rev-parse", "--git-path", name).strip()
    if name.startswith("rebase-"):
        marker.mkdir()
    else:
        marker.write_text(p.old + "\n")
    with pytest.raises(GitError) as info:
        p.apply()
    assert f"git operation in progress ({name})" in info.value.message
    assert p.tip() == p.old
    shutil.rmtree(marker) if marker.is_dir() else marker.unlink()
    p.apply()
    assert "work.txt" in p.files()


# --- 4. The sandbox's git is data -------------------------------------------------------------


def test_hostile_git_config_hooks_and_attributes_never_run(p: Pipeline, tmp_path: Path) -> None:
    # Inside the sandbox's home: writable wherever collection runs, confined or not.
    marker = Path(p.sandbox.home) / "PWNED"
    evil = f"sh -c 'echo $0 >> {marker}'"
    p.write("payload.sh", f"#!/bin/sh\necho hook >> {marker}\n")
    os.chmod(p.sb / "payload.sh", 0o755)
    include = tmp_path / "included.cfg"
    include.write_text(f"[core]\n\tfsmonitor = {p.sb / 'payload.sh'}\n")
    for key, value in [
        ("core.fsmonitor", str(p.sb / "payload.sh")),
        ("core.hooksPath", str(p.sb)),
        ("core.sshCommand", evil),
        ("filter.evil.clean", evil),
        ("filter.evil.smudge", evil),
        ("filter.evil.required", "true"),
        ("diff.external", evil),
        ("core.pager", evil),
        ("include.path", str(include)),
        ("core.worktree", str(tmp_path)),
        ("core.autocrlf", "true"),
    ]:
        p.agent("config", key, value)
    for hook in ("pre-commit", "post-commit", "post-checkout", "post-index-change",
                 "reference-transaction", "pre-auto-gc"):  # fmt: skip
        (p.sb / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        os.chmod(p.sb / ".git" / "hooks" / hook, 0o755)
    marker.unlink(missing_ok=True)
    p.write(".gitattributes", "* filter=evil text eol=crlf ident working-tree-encoding=UTF-16\n")
    p.write("crlf.txt", b"line one\r\nline two\r\n$Id: keep me $\n")
    p.collect()
    assert not marker.exists(), marker.read_text()
    applied = p.apply(allow_sensitive=True)
    assert not marker.exists()
    assert p.show(BRANCH, "crlf.txt") == b"line one\r\nline two\r\n$Id: keep me $\n"
    assert ".gitattributes" in p.files() and applied.commits
    # The control: the same repository, used the ordinary way, does run the agent's program.
    p.sandbox.exec(["git", "-C", str(p.sb), "status"])
    assert marker.exists()


# --- 5. Partial refusal and odd names ---------------------------------------------------------


def test_refused_paths_are_left_out_everywhere_and_kept_as_a_patch(p: Pipeline) -> None:
    p.write(".github/workflows/ci.yml", "on: push\n")
    p.write("ok.txt", "ok\n")
    p.agent("add", "-A")
    p.agent("commit", "-q", "-m", "both")
    p.write(".github/workflows/ci.yml", "on: pull_request\n")
    p.write("tab\there.txt", "tab changed\n")
    p.write("back\\slash.txt", "bs changed\n")
    p.sh("ln -s /etc/passwd evil-link")
    p.collect()
    applied = p.apply()
    refused = dict(tuple(r) for r in applied.record["refused"])
    assert set(refused) == {".github/workflows/ci.yml", "evil-link"}
    files = p.files()
    assert "ok.txt" in files and ".github/workflows/ci.yml" not in files
    assert p.show(BRANCH, "tab\there.txt") == b"tab changed\n"
    assert p.show(BRANCH, "back\\slash.txt") == b"bs changed\n"
    kept = (p.artifacts / "refused.diff").read_bytes()
    assert b"on: pull_request" in kept and b"evil-link" not in kept
    # Later, on request: the sensitive part lands, the never-allowed one stays out.
    later = apply_collected(p.worktree, BRANCH, p.artifacts, expected_commit(p.session,
                            p.artifacts), allow_sensitive=True,
                            only_paths={".github/workflows/ci.yml", "evil-link"})  # fmt: skip
    assert p.show(BRANCH, ".github/workflows/ci.yml") == b"on: pull_request\n"
    assert [r[0] for r in later.record["refused"]] == ["evil-link"]
    assert p.clean()


def test_symlink_chain_through_an_existing_link_is_refused(tmp_path: Path) -> None:
    p = Pipeline(tmp_path, {"README.md": "x\n"})
    (p.repo / "up").symlink_to("..")
    p.git_local("add", "up")
    p.git_local("commit", "-q", "-m", "a link the user made")
    p.old = p.git_local("rev-parse", "HEAD").strip()
    run(p.worktree, "git", "merge", "-q", "--ff-only", "main")
    os.symlink("..", p.sb / "up")
    p.agent("add", "up")
    p.agent("commit", "-q", "-m", "same link in the sandbox")
    p.session.sandbox_base = p.agent("rev-parse", "HEAD").strip()
    p.session.options = {"branch_head": p.old}
    os.symlink("up/etc", p.sb / "sneaky")
    p.write("fine.txt", "fine\n")
    p.collect()
    applied = p.apply()
    assert [r[0] for r in applied.record["refused"]] == ["sneaky"]
    assert "fine.txt" in p.files() and "sneaky" not in p.files()


def _crash_before_worktree_update(p: Pipeline) -> str:
    for i in range(5):
        p.write(f"many/f{i}.txt", f"{i}\n")
    p.write("src/app.py", "print('agent')\n")
    p.collect()
    old = p.tip()
    child = subprocess.run(
        [sys.executable, "-c", _APPLY_CHILD, str(p.worktree), BRANCH, str(p.artifacts), old],
        env={**os.environ, FAULT_ENV: "worktree"}, capture_output=True, check=False,
    )  # fmt: skip
    assert child.returncode == -9 and p.tip() != old
    return old


def test_a_half_updated_worktree_is_finished_file_by_file(p: Pipeline) -> None:
    """As if git read-tree died midway: some files new, the index lock left behind."""
    _crash_before_worktree_update(p)
    (p.worktree / "many").mkdir()
    (p.worktree / "many" / "f0.txt").write_text("0\n")
    (p.worktree / "src" / "app.py").write_text("print('agent')\n")
    gitdir = Path(run(p.worktree, "git", "rev-parse", "--absolute-git-dir").strip())
    (gitdir / "index.lock").write_text("")
    applied = p.apply()
    assert applied.resumed
    assert p.clean()
    assert (p.worktree / "many" / "f4.txt").read_text() == "4\n"


def test_edits_made_after_a_crash_are_never_overwritten(p: Pipeline) -> None:
    _crash_before_worktree_update(p)
    (p.worktree / "src" / "app.py").write_text("print('the user was here')\n")
    (p.worktree / "many").mkdir()
    (p.worktree / "many" / "f0.txt").write_text("0\n")
    with pytest.raises(GitError) as info:
        p.apply()
    assert "src/app.py" in info.value.message
    assert (p.worktree / "src" / "app.py").read_text() == "print('the user was here')\n"


def test_a_report_naming_another_baseline_is_refused(p: Pipeline) -> None:
    """The report is read from a directory the agent can write: its baseline must be ours."""
    from sandboxrun.errors import PatchRejectedError

    p.write("x.txt", "x\n")
    p.agent("commit", "-q", "--allow-empty", "-m", "a commit to pass off as the baseline")
    other = p.agent("rev-parse", "HEAD").strip()

    class Racing(LocalSandbox):
        """The agent rewrites the report between the script and our reading it."""

        def exec(self, argv, **kw):  # type: ignore[no-untyped-def]
            res = super().exec(argv, **kw)
            report = Path(self.home) / ".sandboxrun" / "collect.out"
            text = report.read_text().replace(p.session.sandbox_base, other)
            report.write_text(text)
            return res

    with pytest.raises(PatchRejectedError) as info:
        racing = Racing("t", p.sandbox.root, p.sandbox.settings, isolated=p.sandbox.isolated)
        collect_patches(racing, p.session)
    assert "another baseline" in info.value.message
    p.collect()  # an honest report applies
    p.apply()
    assert "x.txt" in p.files()


def test_big_files_come_out_of_a_remote_sandbox_in_pieces(p: Pipeline, tmp_path: Path) -> None:
    """The path remote backends take: split in the sandbox, read piece by piece, reassembled."""
    from sandboxrun.sandbox.transfer import fetch_in_pieces

    data = os.urandom(10_000) + b"end"
    home = Path(p.sandbox.home)
    (home / "blob").write_bytes(data)
    fetch_in_pieces(p.sandbox, str(home / "blob"), tmp_path / "out", chunk=3000)
    assert (tmp_path / "out").read_bytes() == data
    assert not list(home.glob("blob.part.*"))
    fetch_in_pieces(p.sandbox, str(home / "blob"), tmp_path / "one", chunk=1 << 20)
    assert (tmp_path / "one").read_bytes() == data
