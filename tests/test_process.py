"""The one runner of external programs (sandboxrun.process) and the one git() (gitops)."""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

from sandboxrun import process
from sandboxrun.errors import GitError, ProcessError, ProgramNotFoundError
from sandboxrun.gitops import git, git_bytes


def test_run_raw_keeps_bytes_and_check_raises_with_stderr(tmp_path):
    res = process.run_raw(["sh", "-c", "printf 'a\\0b'; echo oops >&2; exit 3"], check=False)
    assert (res.returncode, res.stdout, res.stderr, res.ok) == (3, b"a\0b", b"oops\n", False)
    with pytest.raises(ProcessError, match="oops") as info:
        process.run(["sh", "-c", "echo oops >&2; exit 3"], what="the oops step")
    assert str(info.value).startswith("the oops step failed: oops")
    assert info.value.returncode == 3


def test_a_missing_program_is_its_own_error():
    with pytest.raises(ProgramNotFoundError, match="not installed"):
        process.run(["sandboxrun-no-such-program-xyz"])


def test_stream_feeds_a_program_and_reports_its_failure(tmp_path):
    out = tmp_path / "out"
    with (
        open(out, "wb") as fh,
        process.Stream(
            ["tr", "a-z", "A-Z"], what="tr failed", stdin=process.Stream.PIPE, stdout=fh
        ) as stream,
    ):
        stream.stdin.write(b"hello\n")
    assert out.read_bytes() == b"HELLO\n"
    failing = process.Stream(
        ["sh", "-c", "echo broken >&2; exit 2"], what="sh failed", stdout=process.Stream.PIPE
    )
    with pytest.raises(ProcessError, match="sh failed: broken") as info:
        failing.finish()
    assert info.value.returncode == 2


def test_stream_kills_and_reaps_the_program_on_an_error():
    with (
        pytest.raises(RuntimeError),
        process.Stream(["sleep", "60"], what="sleep", stdout=process.Stream.PIPE) as stream,
    ):
        raise RuntimeError("consumer failed")
    assert stream.proc.returncode is not None  # reaped, not left running


def test_spawn_detached_starts_its_own_session(tmp_path):
    marker = tmp_path / "sid"
    pid = process.spawn_detached(
        [sys.executable, "-c", f"import os; open({str(marker)!r}, 'w').write(str(os.getsid(0)))"],
        output=tmp_path / "log",
    )
    # Either this wait or spawn_detached's own reaper thread collects it; both return at its end.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    assert marker.read_text() == str(pid)


def test_git_errors_name_the_subcommand_and_the_repo(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(GitError) as info:
        git(tmp_path / "r", "-c", "core.quotepath=on", "rev-parse", "HEAD")
    assert info.value.message.startswith(f"git rev-parse in {tmp_path / 'r'} failed: fatal:")
    git(tmp_path / "r", "init", "-q")
    with pytest.raises(GitError, match="git worktree add in .* failed"):
        git(tmp_path / "r", "worktree", "add", "-b", "x", str(tmp_path / "w"), "nope")
    assert git_bytes(tmp_path / "r", "rev-parse", "--is-inside-work-tree") == b"true\n"
    assert not git(tmp_path / "r", "rev-parse", "HEAD", check=False).ok


def test_git_without_hooks_runs_none(tmp_path):
    repo = tmp_path / "r"
    git(tmp_path, "init", "-q", str(repo))
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path / 'hook-ran'}\n")
    hook.chmod(0o755)
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    git(repo, "commit", "-q", "--allow-empty", "-m", "a", env=ident, hooks=False)
    assert not (tmp_path / "hook-ran").exists()
    git(repo, "commit", "-q", "--allow-empty", "-m", "b", env=ident)
    assert (tmp_path / "hook-ran").exists()
