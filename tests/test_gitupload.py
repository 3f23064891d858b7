"""A cold upload as git objects (sync/gitupload.py): the same tree a tarball's baseline gets.

The baseline a sandbox commits from a tarball is ``git add -A`` of the unpacked files; the git
upload builds that tree here from the index (plus the files git sees changed) instead. These
tests build both from real repositories and compare tree ids, which compare every path, mode
and byte at once.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.sync.gitupload import GIT, pack_git, plan
from sandboxrun.sync.pack import pack_worktree
from sandboxrun.sync.unpack import safe_extract


def write(root: Path, rel: str, data: bytes | str = "x\n", mode: int | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    write(root, "README.md", "hello\n")
    write(root, "src/app.py", "print('app')\n")
    write(root, "src/run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(root, "docs/gone.md", "to be deleted\n")
    write(root, "odd name/with space.txt", "spaces\n")
    write(root, "bin.dat", bytes(range(256)) * 40)
    write(root, ".gitignore", "build/\n*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    # the work tree as a session's worktree has it: changed, new, deleted, ignored, chmod-ed
    write(root, "src/app.py", "print('changed')\n")
    write(root, "new/untracked.txt", "untracked\n")
    (root / "docs/gone.md").unlink()
    write(root, "build/out.o", "ignored\n")
    write(root, "debug.log", "ignored\n")
    (root / "README.md").chmod(0o755)
    write(root, ".env", "API_KEY=sk-not-uploaded\n")  # a secret by name: never uploaded
    return root


def tarball_tree(root: Path, tmp: Path) -> str:
    """What a sandbox commits from the tarball: unpack it, ``git add -A``, ``write-tree``."""
    packed = pack_worktree(root, tmp / "up.tar.gz")
    dest = tmp / "from-tar"
    dest.mkdir()
    safe_extract(packed.path, dest, "gzip")
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    return git(dest, "write-tree").strip()


def checkout(pack: Path, tree: str, dest: Path) -> Path:
    """What the sandbox does with a git upload (without the shell script around it)."""
    dest.mkdir()
    git(dest, "init", "-q")
    with open(pack, "rb") as fh:
        subprocess.run(["git", "-C", str(dest), "index-pack", "--strict", "--stdin"],
                       stdin=fh, check=True, capture_output=True)  # fmt: skip
    git(dest, "read-tree", tree)
    git(dest, "checkout-index", "-a", "-u")
    return dest


def objects_of(repo: Path) -> set[str]:
    found = set()
    for top, _, files in os.walk(repo / ".git" / "objects"):
        found.update(os.path.join(top, f) for f in files)
    return found


def test_tree_equals_the_tarball_baseline(tmp_path):
    repo = make_repo(tmp_path / "repo")
    before = objects_of(repo)
    result = pack_git(repo, tmp_path / "up.pack")
    assert result.compression == GIT
    assert result.tree == tarball_tree(repo, tmp_path)
    assert ".env" in result.selection.excluded_secrets
    assert sorted(result.selection.files) == sorted(
        [".gitignore", "README.md", "bin.dat", "new/untracked.txt", "odd name/with space.txt",
         "src/app.py", "src/run.sh"]
    )  # fmt: skip
    # nothing was written into the user's repository (a scratch object directory was used)
    assert objects_of(repo) == before
    # the pack holds everything the tree needs, and checks out byte for byte
    out = checkout(result.path, result.tree, tmp_path / "out")
    for rel in result.selection.files:
        assert (out / rel).read_bytes() == (repo / rel).read_bytes(), rel
        assert os.access(out / rel, os.X_OK) == os.access(repo / rel, os.X_OK), rel
    assert not (out / ".env").exists() and not (out / "build").exists()
    # the index holds the files' stat data: nothing differs, nothing is left over
    assert git(out, "diff-files", "--name-only") == ""
    assert git(out, "ls-files", "-o") == ""


def test_a_file_changed_to_a_secret_is_left_out(tmp_path):
    repo = make_repo(tmp_path / "repo")
    body = "\n".join(("Zx9" * 22)[:64] for _ in range(8))
    write(
        repo,
        "src/app.py",
        f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n",
    )
    result = pack_git(repo, tmp_path / "up.pack")
    assert "src/app.py" in result.selection.excluded_secrets
    listing = git(checkout(result.path, result.tree, tmp_path / "out"), "ls-files")
    assert "src/app.py" not in listing.split("\n")
    assert result.tree == tarball_tree(repo, tmp_path)


def test_a_repository_with_nothing_committed(tmp_path):
    """Every file is new: all blobs are written here (one fast-import), none from the index."""
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    for i in range(30):
        write(repo, f"d{i % 3}/f{i}.txt", f"file {i}\n" * i)
    write(repo, "empty", b"")
    result = pack_git(repo, tmp_path / "up.pack")
    assert result.tree == tarball_tree(repo, tmp_path)
    assert result.file_count == 31


def test_no_files_is_the_empty_tree(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    result = pack_git(repo, tmp_path / "up.pack")
    assert result.tree == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    assert result.file_count == 0


def test_a_colon_in_the_repository_path(tmp_path):
    """The repository's objects are borrowed through GIT_ALTERNATE_OBJECT_DIRECTORIES, a
    colon-separated list: a path with a colon (or a quote) must be quoted, not split."""
    repo = make_repo(tmp_path / 'we:ird "path')
    result = pack_git(repo, tmp_path / "up.pack")
    assert result.tree == tarball_tree(repo, tmp_path)


@pytest.mark.parametrize(
    "setup, why",
    [
        (lambda r: write(r, ".gitattributes", "*.txt text\n"), ".gitattributes"),
        (lambda r: write(r, "sub/.gitattributes", "* -text\n"), ".gitattributes"),
        (lambda r: git(r, "config", "core.autocrlf", "true"), "core.autocrlf"),
        (lambda r: write(r, ".git/info/attributes", "* text\n"), "info/attributes"),
    ],
)
def test_content_conversions_keep_the_tarball(tmp_path, setup, why):
    """Where git could store other bytes than the file's (line endings, filters), the index's
    blob ids are not the files' bytes: the run uploads a tarball instead."""
    repo = make_repo(tmp_path / "repo")
    setup(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "conversions")
    assert why in (plan(repo) or "")


def test_untracked_gitattributes_is_refused_by_pack_git(tmp_path):
    from sandboxrun.errors import PackError

    repo = make_repo(tmp_path / "repo")
    write(repo, "new/.gitattributes", "* text\n")
    with pytest.raises(PackError, match="gitattributes"):
        pack_git(repo, tmp_path / "up.pack")


def test_plain_directory_and_submodules_keep_the_tarball(tmp_path):
    plain = tmp_path / "plain"
    write(plain, "a.txt")
    assert plan(plain) == "not a git work tree"
    repo = make_repo(tmp_path / "repo")
    assert plan(repo) is None
    assert plan(repo, ["vendor/lib"]) == "submodules are included"
    assert plan(repo / "src") == "not the top of a work tree"


def test_a_file_that_becomes_a_secret_after_the_selection_is_left_out(tmp_path):
    """The bytes that become a blob are checked themselves, not only those the selection saw."""
    from sandboxrun.sync.pack import select_files

    repo = make_repo(tmp_path / "repo")
    sel = select_files(repo)
    assert "new/untracked.txt" in sel.files
    body = "\n".join(("Qw7" * 22)[:64] for _ in range(8))
    write(
        repo,
        "new/untracked.txt",
        f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n",
    )
    result = pack_git(repo, tmp_path / "up.pack", selection=sel)
    assert "new/untracked.txt" in result.selection.excluded_secrets
    assert "new/untracked.txt" not in result.selection.files
    out = checkout(result.path, result.tree, tmp_path / "out")
    assert not (out / "new/untracked.txt").exists()


def test_a_sha256_repository_keeps_the_tarball(tmp_path):
    """A fresh repository in the sandbox holds sha1 objects: a sha256 pack could not go in."""
    repo = tmp_path / "sha256"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256")
    write(repo, "a.txt")
    assert plan(repo) == "object format sha256"
