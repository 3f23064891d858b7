"""Checking and applying the agent's patches, against real git repositories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from patch_helpers import AGENT, LOCAL, Repos, added, as_mail, git, make_repos, out, write

from sandboxrun.errors import GitError, PatchRejectedError
from sandboxrun.sync.patches import (
    DEFAULT_IDENTITY,
    FileChange,
    PatchCheck,
    _precheck_with_git,
    apply_changes,
    check_changes,
    parse_changes,
    summarize,
    unquote_git_path,
)

BASELINE: dict[str, bytes | str] = {
    "README.md": "# project\n\nsome text\n",
    "src/app.py": "def main():\n    return 1\n",
    "crlf.txt": b"one\r\ntwo\r\n",
    "to delete.txt": "bye\n",
    "old name.txt": "rename me\n" * 5,
    "run.sh": "#!/bin/sh\necho hi\n",
}


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's git config and identity out of every test."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "EMAIL", "GIT_DIR", "GIT_WORK_TREE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return make_repos(tmp_path, BASELINE)


def assert_untouched(repos: Repos, head: str) -> None:
    assert repos.head() == head
    assert repos.status() == ""
    assert not (repos.worktree / ".git").is_dir()  # still a linked worktree
    rebase_apply = out(repos.worktree, "rev-parse", "--git-path", "rebase-apply")
    assert not (repos.worktree / rebase_apply).exists()


# ------------------------------------------------------------------------------------------
# Round trips made by real git


def test_round_trip_keeps_commits_and_bytes(repos: Repos) -> None:
    """Commits stay separate with messages and authors; leftovers become one more commit."""
    sb = repos.sandbox
    write(sb / "src/app.py", "def main():\n    return 2\n")
    write(sb / "data.bin", b"\x00\x01\x02binary\x00\xff" * 50)
    (sb / "run.sh").chmod(0o755)
    git(sb, "mv", "old name.txt", "new name.txt")
    repos.commit_in_sandbox("Change the answer\n\nA body line that must survive.")
    write(sb / "crlf.txt", b"one\r\nTWO\r\n")
    (sb / "to delete.txt").unlink()
    write(sb / "spé cial/naïve file.txt", "unicode\n")
    repos.commit_in_sandbox("[WIP] second step")
    write(sb / "new name.txt", "rename me\n" * 5 + "and edit after\n")
    write(sb / "notes with space.md", "left over\n")
    mbox, diff = repos.produce()
    expected_tree = repos.sandbox_tree()

    result = apply_changes(repos.worktree, mbox, diff, leftover_message="leftover work")

    assert len(result.commits) == 3
    assert out(repos.worktree, "rev-list", "HEAD").split()[:3] == result.commits[::-1]
    assert out(repos.worktree, "rev-parse", "HEAD^{tree}") == expected_tree
    assert repos.status() == ""
    subjects = out(repos.worktree, "log", "--format=%s", "-3").splitlines()
    assert subjects == ["leftover work", "[WIP] second step", "Change the answer"]
    first_body = out(repos.worktree, "log", "--format=%b", "-1", result.commits[0])
    assert first_body == "A body line that must survive."
    authors = out(repos.worktree, "log", "--format=%an <%ae>|%cn", "-3").splitlines()
    assert authors[1:] == [f"{AGENT[0]} <{AGENT[1]}>|{LOCAL[0]}"] * 2
    assert authors[0] == f"{LOCAL[0]} <{LOCAL[1]}>|{LOCAL[0]}"
    for name in ("data.bin", "crlf.txt", "spé cial/naïve file.txt", "new name.txt"):
        assert (repos.worktree / name).read_bytes() == (repos.sandbox / name).read_bytes()
    assert os.access(repos.worktree / "run.sh", os.X_OK)
    assert not (repos.worktree / "to delete.txt").exists()

    assert set(result.files_changed) == {
        "src/app.py", "data.bin", "run.sh", "new name.txt", "crlf.txt", "to delete.txt",
        "spé cial/naïve file.txt", "notes with space.md",
    }  # fmt: skip
    numstat = out(repos.worktree, "diff", "--numstat", "-M", f"{repos.base}..HEAD")
    nums = [line.split("\t")[:2] for line in numstat.splitlines()]
    assert result.insertions == sum(int(a) for a, _ in nums if a != "-")
    assert result.deletions == sum(int(d) for _, d in nums if d != "-")
    assert any("run.sh" in w and "executable" in w for w in result.warnings)


def test_patches_come_in_the_collectors_format(repos: Repos) -> None:
    """The helper's patches are the collector's: mboxrd, no signature, quoted paths even when
    the sandbox's git is configured otherwise, and messages with "From " lines survive."""
    sb = repos.sandbox
    git(sb, "config", "core.quotepath", "off")  # the collector must not depend on this
    git(sb, "config", "format.signature", "a signature that must not appear")
    write(sb / "é.txt", "accent\n")
    message = "Subject stays\n\nFrom the top: a body line\n>From quoted once\n>>From twice"
    repos.commit_in_sandbox(message)
    write(sb / "ü.txt", "left over\n")
    mbox, diff = repos.produce()

    assert b"\n>From the top: a body line\n>>From quoted once\n>>>From twice\n" in mbox
    assert b"a signature that must not appear" not in mbox and b"\n-- \n" not in mbox
    assert b'"b/\\303\\251.txt"' in mbox and b'"b/\\303\\274.txt"' in diff

    result = apply_changes(repos.worktree, mbox, diff)
    body = out(repos.worktree, "log", "--format=%B", "-1", result.commits[0])
    assert body == message
    assert out(repos.worktree, "rev-parse", "HEAD^{tree}") == repos.sandbox_tree()


def test_leftover_that_builds_on_the_commits(repos: Repos) -> None:
    """One input may touch a path several times: create, delete, recreate, rename then edit."""
    sb = repos.sandbox
    write(sb / "new.txt", "v1\n")
    repos.commit_in_sandbox("add")
    (sb / "new.txt").unlink()
    repos.commit_in_sandbox("remove")
    write(sb / "new.txt", "v2\n")
    git(sb, "mv", "README.md", "README.rst")
    repos.commit_in_sandbox("recreate and rename")
    write(sb / "README.rst", "changed after the rename\n")
    (sb / "src/app.py").unlink()
    write(sb / "src/app.py/now a dir.txt", "file became a directory\n")
    mbox, diff = repos.produce()
    expected = repos.sandbox_tree()

    result = apply_changes(repos.worktree, mbox, diff)

    assert len(result.commits) == 4
    assert out(repos.worktree, "rev-parse", "HEAD^{tree}") == expected


def test_only_commits_or_only_leftover(tmp_path: Path) -> None:
    """Either input may be empty."""
    a = make_repos(tmp_path / "a", BASELINE)
    write(a.sandbox / "x.txt", "x\n")
    a.commit_in_sandbox("just a commit")
    mbox, diff = a.produce()
    assert diff == b""
    assert len(apply_changes(a.worktree, mbox, diff).commits) == 1

    b = make_repos(tmp_path / "b", BASELINE)
    write(b.sandbox / "y.txt", "y\n")
    mbox, diff = b.produce()
    assert mbox == b""
    result = apply_changes(b.worktree, mbox, diff, leftover_message="only leftovers")
    assert len(result.commits) == 1
    assert out(b.worktree, "log", "-1", "--format=%s") == "only leftovers"


def test_empty_inputs_change_nothing(repos: Repos) -> None:
    """No work at all gives a result with no commits (completed_no_changes)."""
    head = repos.head()
    result = apply_changes(repos.worktree, b"", b"")
    assert result.commits == [] and result.files_changed == []
    assert (result.insertions, result.deletions) == (0, 0)
    assert_untouched(repos, head)


def test_works_without_any_git_identity(tmp_path: Path) -> None:
    """CI machines have no user.name/user.email: a fallback identity is used."""
    repos = make_repos(tmp_path, BASELINE, local_identity=False)
    assert b"user." not in git(repos.local, "config", "--list")
    write(repos.sandbox / "a.txt", "a\n")
    repos.commit_in_sandbox("agent commit")
    write(repos.sandbox / "b.txt", "b\n")
    mbox, diff = repos.produce()

    result = apply_changes(repos.worktree, mbox, diff)

    log = out(repos.worktree, "log", "--format=%an <%ae>|%cn <%ce>", "-2").splitlines()
    fallback = f"{DEFAULT_IDENTITY[0]} <{DEFAULT_IDENTITY[1]}>"
    assert log == [f"{fallback}|{fallback}", f"{AGENT[0]} <{AGENT[1]}>|{fallback}"]
    assert len(result.commits) == 2


def test_explicit_committer_fallback(tmp_path: Path) -> None:
    """The caller's committer is used when git has no identity."""
    repos = make_repos(tmp_path, BASELINE, local_identity=False)
    write(repos.sandbox / "b.txt", "b\n")
    mbox, diff = repos.produce()
    apply_changes(repos.worktree, mbox, diff, committer=("Runner", "runner@ci.invalid"))
    assert out(repos.worktree, "log", "-1", "--format=%cn <%ce>") == "Runner <runner@ci.invalid>"


def test_hooks_do_not_run(repos: Repos, tmp_path: Path) -> None:
    """The user's hooks would run over the agent's files, so none run while we apply."""
    marker = tmp_path / "hook-ran"
    hooks = Path(out(repos.local, "rev-parse", "--absolute-git-dir")) / "hooks"
    for name in ("applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit",
                 "commit-msg", "post-commit", "prepare-commit-msg"):  # fmt: skip
        write(hooks / name, f"#!/bin/sh\necho {name} >> '{marker}'\n")
        (hooks / name).chmod(0o755)
    write(repos.sandbox / "a.txt", "a\n")
    repos.commit_in_sandbox("commit")
    write(repos.sandbox / "b.txt", "b\n")
    mbox, diff = repos.produce()
    assert len(apply_changes(repos.worktree, mbox, diff).commits) == 2
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Refusals: nothing is applied and the worktree is left exactly as it was

MALICIOUS = [
    (added("../evil"), "../evil"),
    (added("/etc/passwd"), "/etc/passwd"),
    (b"diff --git a/x b/x\nnew file mode 100644\nrename from x\nrename to /etc/cron.d/x\n",
     "/etc/cron.d/x"),
    (added(".git/hooks/pre-commit", "#!/bin/sh", "100755"), ".git/hooks/pre-commit"),
    (added(".GIT/config"), ".GIT/config"),
    (added("sub/.Git./config"), "sub/.Git./config"),
    (added("link", "/etc/passwd", "120000"), "link"),
    (added("deep/link", "../../outside", "120000"), "deep/link"),
    (added("gitdir", ".git", "120000"), "gitdir"),
    (added(".claude/settings.json", '{"permissions": {"allow": ["Bash(*)"]}}'),
     ".claude/settings.json"),
    (added(".mcp.json", "{}"), ".mcp.json"),
    (added(".github/workflows/ci.yml", "on: push"), ".github/workflows/ci.yml"),
    (b"diff --git a/vendor/lib b/vendor/lib\nnew file mode 160000\nindex 0000000..1234567\n"
     b"--- /dev/null\n+++ b/vendor/lib\n@@ -0,0 +1 @@\n"
     b"+Subproject commit 1234567890123456789012345678901234567890\n", "vendor/lib"),
    (added("fake\u202etxt.exe"), "fake\u202etxt.exe"),
]  # fmt: skip


@pytest.mark.parametrize(("diff", "path"), MALICIOUS, ids=[p for _, p in MALICIOUS])
def test_malicious_diffs_are_refused(repos: Repos, diff: bytes, path: str) -> None:
    """Each hand-made attack is refused by name and nothing changes."""
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, b"", diff, artifacts_hint="/tmp/artifacts/s1")
    assert path in info.value.paths
    assert path in info.value.message
    assert "/tmp/artifacts/s1" in (info.value.hint or "")
    assert_untouched(repos, head)


def test_malicious_change_inside_the_mbox_is_refused(repos: Repos) -> None:
    """Commits are checked like leftovers, and a good leftover does not help."""
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, as_mail(added(".claude/settings.local.json")),
                      added("fine.txt"))  # fmt: skip
    assert info.value.paths == [".claude/settings.local.json"]
    assert "--allow-sensitive" in (info.value.hint or "")
    assert_untouched(repos, head)


def test_allow_sensitive_lets_sensitive_paths_through(repos: Repos) -> None:
    """With allow_sensitive the agent may edit .claude/, .mcp.json and workflows."""
    diff = (
        added(".claude/settings.json", "{}")
        + added(".mcp.json")
        + added(".github/workflows/ci.yml", "on: push")
    )
    result = apply_changes(repos.worktree, b"", diff, allow_sensitive=True)
    assert len(result.commits) == 1
    assert set(result.sensitive) == {
        ".claude/settings.json",
        ".mcp.json",
        ".github/workflows/ci.yml",
    }
    assert (repos.worktree / ".claude/settings.json").read_text() == "{}\n"


@pytest.mark.parametrize("path", ["../evil", ".git/config", "/etc/passwd", ".GIT/hooks/x"])
def test_allow_sensitive_never_allows_escapes(repos: Repos, path: str) -> None:
    """allow_sensitive does not cover paths outside the tree or in .git."""
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, b"", added(".claude/ok.json") + added(path),
                      allow_sensitive=True)  # fmt: skip
    assert info.value.paths == [path]
    assert "--allow-sensitive" not in (info.value.hint or "")
    assert_untouched(repos, head)


def test_deleting_or_renaming_sensitive_files_is_a_change(tmp_path: Path) -> None:
    """Removing a workflow (or moving Claude settings away) is refused like editing it."""
    repos = make_repos(tmp_path, {**BASELINE, ".github/workflows/ci.yml": "on: push\n",
                                  ".claude/settings.json": "{}\n"})  # fmt: skip
    (repos.sandbox / ".github/workflows/ci.yml").unlink()
    git(repos.sandbox, "mv", ".claude/settings.json", "settings.json")
    mbox, diff = repos.produce()
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, mbox, diff)
    assert set(info.value.paths) == {".github/workflows/ci.yml", ".claude/settings.json"}
    assert_untouched(repos, head)


def test_hooks_path_in_the_tree_is_sensitive(repos: Repos) -> None:
    """When core.hooksPath points into the tree (husky), files there are sensitive."""
    git(repos.local, "config", "core.hooksPath", "tools/git-hooks")
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, b"", added("tools/git-hooks/pre-commit", "#!/bin/sh"))
    assert "core.hooksPath" in info.value.message
    assert_untouched(repos, head)


def test_conflict_leaves_the_branch_as_it_was(repos: Repos) -> None:
    """Patches that no longer apply (the branch moved) are refused with git's words."""
    write(repos.sandbox / "src/app.py", "def main():\n    return 42\n")
    repos.commit_in_sandbox("agent edit")
    mbox, diff = repos.produce()
    write(repos.worktree / "src/app.py", "def main():\n    return 'user'\n")
    git(repos.worktree, "commit", "-q", "-am", "user moved the branch")
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, mbox, diff, artifacts_hint="/tmp/art")
    assert info.value.paths == ["src/app.py"]
    assert "git am --" not in info.value.message
    assert "/tmp/art" in (info.value.hint or "")
    assert_untouched(repos, head)


def test_failure_midway_through_git_am_rolls_back(repos: Repos) -> None:
    """A later mail that git am cannot take undoes the commits already made."""
    sb = repos.sandbox
    write(sb / "a.txt", "a\n")
    repos.commit_in_sandbox("first")
    git(sb, "commit", "-q", "--allow-empty", "-m", "empty: git am stops here")
    write(sb / "b.txt", "b\n")
    repos.commit_in_sandbox("third")
    mbox = git(sb, "format-patch", "--always", "--binary", "--full-index", "--stdout",
               f"{repos.base}..HEAD")  # fmt: skip
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, mbox, added("c.txt"))
    assert "Patch is empty" in info.value.message
    assert "git am --" not in info.value.message
    assert_untouched(repos, head)
    assert not (repos.worktree / "a.txt").exists()


def test_symlink_chain_escaping_through_an_existing_link_is_caught_after_applying(
    tmp_path: Path,
) -> None:
    """A new link to an existing link that leaves the tree is found on disk and undone."""
    outside = tmp_path / "outside"
    outside.mkdir()
    repos = make_repos(tmp_path / "r", BASELINE)
    for repo in (repos.sandbox, repos.worktree):
        os.symlink(outside, repo / "vendor")
    repos.commit_in_sandbox("vendor link")  # in the baseline of both sides
    git(repos.worktree, "add", "vendor")
    git(repos.worktree, "commit", "-q", "-m", "vendor link")
    repos.base = out(repos.sandbox, "rev-parse", "HEAD")
    os.symlink("vendor", repos.sandbox / "innocent")
    mbox, diff = repos.produce()
    assert check_changes(parse_changes(diff)).ok  # lexically it stays inside
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, mbox, diff)
    assert info.value.paths == ["innocent"]
    assert_untouched(repos, head)


def test_renamed_symlink_is_rechecked_where_it_lands(tmp_path: Path) -> None:
    """A pure rename shows no target in the diff; the landed link is checked after applying."""
    repos = make_repos(tmp_path, {"a/c.txt": "c\n"})
    os.symlink("../c.txt", repos.sandbox / "a/b")  # a/b -> a/c.txt, inside
    repos.commit_in_sandbox("link")
    os.symlink("../c.txt", repos.worktree / "a/b")
    git(repos.worktree, "add", "-A")
    git(repos.worktree, "commit", "-q", "-m", "link")
    repos.base = out(repos.sandbox, "rev-parse", "HEAD")
    git(repos.sandbox, "mv", "a/b", "b")  # now b -> ../c.txt, outside the tree
    mbox, diff = repos.produce()
    assert b"rename from a/b" in diff and b"120000" not in diff
    head = repos.head()
    with pytest.raises(PatchRejectedError) as info:
        apply_changes(repos.worktree, mbox, diff)
    assert info.value.paths == ["b"]
    assert_untouched(repos, head)


def test_dirty_worktree_is_refused_and_kept(repos: Repos) -> None:
    """Uncommitted user work is never touched."""
    write(repos.sandbox / "x.txt", "x\n")
    mbox, diff = repos.produce()
    write(repos.worktree / "README.md", "user's unsaved work\n")
    write(repos.worktree / "untracked.txt", "mine\n")
    head = repos.head()
    with pytest.raises(GitError) as info:
        apply_changes(repos.worktree, mbox, diff)
    assert "uncommitted changes" in info.value.message
    assert repos.head() == head
    assert (repos.worktree / "README.md").read_text() == "user's unsaved work\n"
    assert (repos.worktree / "untracked.txt").read_text() == "mine\n"


def test_untracked_files_are_allowed_and_survive(repos: Repos) -> None:
    """Untracked files are not uncommitted work we could lose."""
    write(repos.worktree / "scratch.txt", "mine\n")
    write(repos.sandbox / "x.txt", "x\n")
    mbox, diff = repos.produce()
    assert len(apply_changes(repos.worktree, mbox, diff).commits) == 1
    assert (repos.worktree / "scratch.txt").read_text() == "mine\n"


def test_git_sees_a_path_the_checker_missed(repos: Repos, tmp_path: Path) -> None:
    """The cross-check refuses input where git reads a path our parser did not report."""
    patch = tmp_path / "p.diff"
    patch.write_bytes(added("hidden.txt"))
    with pytest.raises(PatchRejectedError) as info:
        _precheck_with_git(repos.worktree, patch, [], None)
    assert info.value.paths == ["hidden.txt"]


# ------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"sp\\303\\251cial name"', "spécial name"),
        (b'"tab\\there"', "tab\there"),
        (b'"quote\\"and\\\\backslash"', 'quote"and\\backslash'),
        (b'"nl\\nbell\\a"', "nl\nbell\a"),
        (b"plain name with spaces", "plain name with spaces"),
        (b'"\\377bad utf8"', "\udcffbad utf8"),
    ],
)
def test_unquote_git_path(raw: bytes, expected: str) -> None:
    """git's C quoting: named escapes, octal bytes, quotes; bare names pass through."""
    assert unquote_git_path(raw) == expected


@pytest.mark.parametrize("raw", [b'"unterminated', b'"bad \\q escape"', b'"short \\30"'])
def test_unquote_rejects_malformed(raw: bytes) -> None:
    """Broken quoting is an error, not a guess."""
    with pytest.raises(ValueError):
        unquote_git_path(raw)


def test_parse_quoted_and_spaced_paths_from_real_git(repos: Repos) -> None:
    """Names git quotes (non-ASCII, tabs, quotes) and names with spaces parse back exactly."""
    names = ["spé cial name.txt", 'with "quotes".txt', "tab\there.txt", "a b/c d.txt"]
    for name in names:
        write(repos.sandbox / name, "x\n")
    _, diff = repos.produce()
    assert b'"b/sp\\303\\251 cial name.txt"' in diff
    assert sorted(ch.path for ch in parse_changes(diff)) == sorted(names)


def test_parse_rename_copy_mode_binary_and_delete() -> None:
    """Extended headers set status, modes and flags."""
    diff = (
        b"diff --git a/old b/new dir/new\nsimilarity index 90%\nrename from old\n"
        b"rename to new dir/new\nindex 1111111..2222222 100644\n--- a/old\n+++ b/new dir/new\t\n"
        b"@@ -1 +1 @@\n-a\n+b\n"
        b'diff --git a/src "b/c\\303\\251"\nsimilarity index 100%\ncopy from src\n'
        b'copy to "c\\303\\251"\n'
        b"diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
        b"diff --git a/img.png b/img.png\nindex 1111111..2222222 100644\n"
        b"Binary files a/img.png and b/img.png differ\n"
        b"diff --git a/gone b/gone\ndeleted file mode 100644\nindex 1111111..0000000\n"
        b"--- a/gone\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
        b"diff --git a/legacy b/legacy2\nrename old legacy\nrename new legacy2\n"
    )
    got = {ch.path: ch for ch in parse_changes(diff)}
    assert got["new dir/new"].status == "renamed" and got["new dir/new"].old_path == "old"
    assert got["cé"].status == "copied" and got["cé"].old_path == "src"
    assert got["run.sh"].mode_change and got["run.sh"].new_mode == "100755"
    assert got["img.png"].is_binary and got["img.png"].status == "modified"
    assert got["gone"].status == "deleted" and got["gone"].new_mode is None
    assert got["legacy2"].status == "renamed" and got["legacy2"].old_path == "legacy"
    assert summarize(parse_changes(diff)).startswith("6 files: R old -> new dir/new, C src")


def test_content_lines_that_look_like_headers_are_content(tmp_path: Path) -> None:
    """Hunk line counts are followed, so content cannot forge headers."""
    repos = make_repos(tmp_path, {"tricky.txt": "-- a/.claude/settings.json\nkeep\n"})
    write(repos.sandbox / "tricky.txt", "keep\n++ b/.git/config\n@@ -1 +1 @@\nrename to /x\n")
    write(repos.sandbox / "new.txt", "diff --git a/.mcp.json b/.mcp.json\n")
    _, diff = repos.produce()
    assert b"\n--- a/.claude/settings.json\n" in diff and b"\n+++ b/.git/config\n" in diff
    changes = parse_changes(diff)
    assert sorted(ch.path for ch in changes) == ["new.txt", "tricky.txt"]
    assert check_changes(changes).ok
    result = apply_changes(repos.worktree, b"", diff)
    assert out(repos.worktree, "rev-parse", "HEAD^{tree}") == repos.sandbox_tree()
    assert result.files_changed == ["new.txt", "tricky.txt"]


def test_dash_lines_win_over_the_diff_git_line() -> None:
    """As in git apply, the ---/+++ names (not the diff --git line) say which file is edited."""
    diff = (
        b'diff --git a/safe b/safe\n--- a/.mcp.json\n+++ b/.mcp.json\n@@ -1 +1 @@\n-{}\n+{"x":1}\n'
    )
    assert [c.path for c in parse_changes(diff)] == [".mcp.json"]


def test_symlink_target_and_binary_data_are_read() -> None:
    """A symlink's target comes from its hunk; binary data does not end the section early."""
    mbox = (
        b"diff --git a/b.bin b/b.bin\nnew file mode 100644\nindex 0..8\nGIT binary patch\n"
        b"literal 5\nMcmZQzOv=my00M6TI{*Lx\n\nliteral 0\nHcmV?d00001\n\n"
        + added("dir/link", "../target", "120000")
    )
    changes = parse_changes(mbox)
    assert [c.path for c in changes] == ["b.bin", "dir/link"]
    assert changes[0].is_binary
    assert changes[1].is_symlink and changes[1].symlink_target == "../target"


def test_traditional_diff_hidden_in_a_commit_message_is_refused() -> None:
    """git apply/am would apply a plain ---/+++/@@ diff too, so it cannot slip past."""
    mail = as_mail(added("ok.txt")) + (
        b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        b"Subject: [PATCH] looks harmless\n\n--- a/.claude/settings.json\n"
        b"+++ b/.claude/settings.json\n@@ -0,0 +1 @@\n+{}\n"
    )
    with pytest.raises(PatchRejectedError, match="plain unified diff"):
        parse_changes(mail)


def test_a_short_hunk_does_not_hide_the_next_header() -> None:
    """A hunk that claims more lines than it has still lets the next header be seen."""
    diff = b"diff --git a/ok b/ok\n--- a/ok\n+++ b/ok\n@@ -1,9 +1,9 @@\n a\n" + added(".mcp.json")
    assert [c.path for c in parse_changes(diff)] == ["ok", ".mcp.json"]


# ------------------------------------------------------------------------------------------
# Checking rules


def _check(path: str, **kw: object) -> tuple[bool, list[str]]:
    check = check_changes([FileChange(path=path, status="added", new_mode="100644")], **kw)
    return check.ok, check.sensitive


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a/../b", "..", ".git", ".git/x", "x/.GIT/y", ".git./x", ".git /x", "GIT~1/x",
     ".git::$INDEX_ALLOCATION/x", ".g\u200cit/x", "a\\..\\b", ".git\\config", "\\\\server\\x", "C:/x", "a//b", "./a", "nul\0byte",
     "esc\x1b[31m", "c1\x9bcontrol"],
)  # fmt: skip
def test_paths_never_allowed(path: str) -> None:
    """Escapes, .git in any disguise, and control or invisible characters."""
    assert _check(path, allow_sensitive=True)[0] is False


@pytest.mark.parametrize(
    ("path", "sensitive"),
    [
        (".claude/settings.json", True),
        (".Claude/Settings.json", True),
        ("pkg/.claude/commands/x.md", True),
        (".claude", True),
        ("sub/.mcp.json", True),
        (".github/workflows/ci.yml", True),
        (".github/CODEOWNERS", True),
        ("docs/.github/x", False),
        (".gitlab-ci.yml", True),
        (".husky/pre-commit", True),
        ("web/.husky/pre-push", True),
        (".pre-commit-config.yaml", True),
        ("sub/.gitattributes", True),
        (".gitmodules", True),
        (".vscode/tasks.json", True),
        ("Jenkinsfile", True),
        ("src/claude.py", False),
        ("docs/mcp.json", False),
        ("CLAUDE.md", True),
        ("docs/CLAUDE.md", True),
        ("claude.md.txt", False),
        (".sandboxrun.toml", True),
        (".sandboxruninclude", True),
        ("sub/.envrc", True),
        (".npmrc", True),
        (".yarnrc.yml", True),
        (".bashrc", True),
        ("home/.bashrc", False),
        ("Makefile", False),
        ("package.json", False),
        ("tab\tname.txt", False),
        ("back\\slash.txt", False),
        (".gitignore", False),
    ],
)
def test_sensitive_paths(path: str, sensitive: bool) -> None:
    """The sensitive list matches by component, case-insensitively."""
    ok, listed = _check(path)
    assert ok is not sensitive
    assert (listed == [path]) is sensitive
    assert _check(path, allow_sensitive=True)[0] is True


def test_symlink_rules() -> None:
    """Links inside the tree are warned about; outside, into .git or into sensitive places not."""

    def link(path: str, target: str) -> PatchCheck:
        return check_changes(
            [FileChange(path=path, status="added", new_mode="120000", symlink_target=target)]
        )

    inside = link("docs/latest", "../src/app.py")
    assert inside.ok and any("docs/latest" in w for w in inside.warnings)
    assert not link("a/b/c", "../../../x").ok
    assert not link("x", "/etc/passwd").ok
    assert not link("x", "sub/../../x").ok
    assert not link("x", "src/../.git/config").ok
    assert not link("x", "").ok
    to_sensitive = link("cfg", ".claude/settings.json")
    assert not to_sensitive.ok and to_sensitive.only_sensitive
    under_sensitive = check_changes(
        [FileChange(path=".claude/x", status="added", new_mode="120000", symlink_target="y")],
        allow_sensitive=True,
    )
    assert not under_sensitive.ok
    unknown = check_changes([FileChange(path="x", status="modified", old_mode="100644",
                                        new_mode="120000")])  # fmt: skip
    assert not unknown.ok


def test_gitlinks_modes_and_executables() -> None:
    """Gitlinks and odd modes are refused; executables are warned about."""
    check = check_changes(
        [
            FileChange(path="sub", status="added", new_mode="160000"),
            FileChange(path="weird", status="added", new_mode="040000"),
            FileChange(path="tool", status="modified", old_mode="100644", new_mode="100755"),
            FileChange(path="old-sub", status="deleted", old_mode="160000"),
        ]
    )
    assert {p for p, _ in check.refused} == {"sub", "weird"}
    assert not check.only_sensitive
    assert any("tool" in w and "executable" in w for w in check.warnings)
    assert any("old-sub" in w for w in check.warnings)
