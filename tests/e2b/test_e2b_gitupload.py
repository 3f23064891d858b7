"""A cold upload as git objects, in an emulated E2B sandbox (``_CHECKOUT_SCRIPT``).

The pack is checked by the sandbox's own git before anything is written: every object by
``index-pack --strict``, then every entry of the tree (regular files only, safe names). These
tests hand it packs sandboxrun never makes (links, submodules, ``.git`` and ``..`` names, a
missing tree, a cut pack) and check that nothing lands in the repository.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandboxrun.config import Settings
from sandboxrun.errors import BackendError, UnsafeArchiveError
from sandboxrun.sandbox.backends.e2b import E2BBackend
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.sandbox.provision import BASELINE_SCRIPT, Provisioner
from sandboxrun.store import SessionStore
from sandboxrun.sync.gitupload import pack_git
from sandboxrun.sync.pack import pack_worktree


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@t", *args],
        input=input, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip


@pytest.fixture
def backend(emulator, tmp_path):
    return E2BBackend(Settings(home=tmp_path / "home"), retry_delays=(0.05, 0.1, 0.2))


@pytest.fixture
def sandbox(backend):
    sb = backend.create("sess-git", timeout_s=120, env={}, metadata={})
    yield sb
    sb.destroy()


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    files = {
        "README.md": b"hello\n",
        "src/app.py": b"print('app')\n",
        "with space/ü n\ti.txt": b"odd names\n",
        "empty": b"",
        "bin.dat": bytes(range(256)) * 64,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    (root / "src/app.py").write_text("print('changed')\n")
    (root / "new.txt").write_text("untracked\n")
    (root / "README.md").unlink()
    return root


def listing(sandbox, path: str) -> list[str]:
    """Every file and directory under ``path`` in the sandbox, but the .git directory."""
    res = sandbox.exec(["sh", "-c", 'cd "$1" && find . -path ./.git -prune -o -print', "sh", path])
    assert res.ok, res.error_text()
    return sorted(p for p in res.text().split("\n") if p and p not in (".", "./.git"))


def uploads_left(emulator, sandbox) -> list[str]:
    tmp = emulator.host_path(sandbox.id, "/tmp")
    return [p for p in os.listdir(tmp) if p.startswith("sandboxrun-upload-")]


def test_checkout_makes_the_same_baseline_as_the_tarball(sandbox, emulator, tmp_path):
    """Same tree id (every path, mode and byte) as unpacking a tarball and ``git add -A``."""
    repo = make_repo(tmp_path / "repo")
    packed = pack_git(repo, tmp_path / "up.pack")
    base = sandbox.upload_and_checkout(packed.path, packed.tree, sandbox.repo_dir)
    tar = pack_worktree(repo, tmp_path / "up.tar.gz")
    sandbox.upload_and_unpack(tar.path, "gzip", "/home/user/from-tar")
    res = sandbox.exec(["sh", "-c", BASELINE_SCRIPT, "sh", "/home/user/from-tar"])
    assert res.ok, res.error_text()
    script = (
        'cd "$1" && git rev-parse "HEAD^{tree}" && git log --format="%an|%cn|%s|%P" '
        "&& git status --porcelain --untracked-files=all && cd /home/user/from-tar "
        '&& git rev-parse "HEAD^{tree}"'
    )
    check = sandbox.exec(["sh", "-c", script, "sh", sandbox.repo_dir])
    assert check.ok, check.error_text()
    tree, log, tar_tree = check.text().strip().split("\n")  # no status lines: clean
    assert tree == tar_tree == packed.tree
    assert log == "Claude (sandboxrun)|Claude (sandboxrun)|sandboxrun baseline|"  # no parent
    assert len(base) == 40
    for rel in packed.selection.files:
        got = emulator.host_path(sandbox.id, f"{sandbox.repo_dir}/{rel}")
        assert got.read_bytes() == (repo / rel).read_bytes(), rel
        assert os.access(got, os.X_OK) == os.access(repo / rel, os.X_OK), rel
    assert uploads_left(emulator, sandbox) == []


def _bad_pack(tmp_path: Path, entries: list[tuple[str, str, str]]) -> tuple[Path, str]:
    """A pack of a tree made by hand: ``(mode, name, content or target)`` per entry."""
    work = tmp_path / "forge"
    work.mkdir(exist_ok=True)
    git(work, "init", "-q")
    lines = []
    for mode, name, data in entries:
        if mode == "160000":  # a submodule: the entry names a commit that is not in the pack
            oid, kind = "1" * 40, "commit"
        else:
            oid = git(work, "hash-object", "-w", "--stdin", input=data.encode()).strip()
            kind = "blob"
        lines.append(f"{mode} {kind} {oid}\t{name}")
    inner = git(work, "mktree", input=("\n".join(lines) + "\n").encode()).strip()
    # the forged entries sit one level down, under an ordinary directory
    tree = git(work, "mktree", input=f"040000 tree {inner}\tsrc\n".encode()).strip()
    pack = tmp_path / "bad.pack"
    pack.write_bytes(
        subprocess.run(["git", "-C", str(work), "pack-objects", "--revs", "--stdout", "-q"],
                       input=f"{tree}\n".encode(), check=True, capture_output=True).stdout
    )  # fmt: skip
    return pack, tree


@pytest.mark.parametrize(
    "entries",
    [
        [("120000", "link", "/etc/passwd")],  # a symlink out of the repository
        [("120000", "up", "..")],
        [("160000", "vendor", "")],  # a submodule
        [("100644", ".git", "[core]\n\thooksPath = /tmp\n")],
        [("100644", ".GIT", "x")],
        [("100644", "..", "x")],
    ],
    ids=["symlink", "symlink-up", "gitlink", "dotgit", "dotgit-case", "dotdot"],
)
def test_unsafe_trees_are_refused_before_anything_is_written(sandbox, emulator, tmp_path, entries):
    pack, tree = _bad_pack(tmp_path, [("100644", "fine.txt", "ok\n"), *entries])
    with pytest.raises(UnsafeArchiveError, match="refused"):
        sandbox.upload_and_checkout(pack, tree, sandbox.repo_dir)
    assert listing(sandbox, sandbox.repo_dir) == []  # not even the safe file
    assert uploads_left(emulator, sandbox) == []


def test_a_tree_the_pack_does_not_hold_fails(sandbox, emulator, tmp_path):
    repo = make_repo(tmp_path / "repo")
    packed = pack_git(repo, tmp_path / "up.pack")
    with pytest.raises(BackendError, match="lacks the tree"):
        sandbox.upload_and_checkout(packed.path, "2" * 40, sandbox.repo_dir)
    assert listing(sandbox, sandbox.repo_dir) == []
    assert uploads_left(emulator, sandbox) == []


def test_a_cut_pack_fails_without_writing(sandbox, emulator, tmp_path):
    repo = make_repo(tmp_path / "repo")
    packed = pack_git(repo, tmp_path / "up.pack")
    cut = tmp_path / "cut.pack"
    cut.write_bytes(packed.path.read_bytes()[:-200])
    with pytest.raises(BackendError, match="damaged"):
        sandbox.upload_and_checkout(cut, packed.tree, sandbox.repo_dir)
    assert listing(sandbox, sandbox.repo_dir) == []
    assert uploads_left(emulator, sandbox) == []


def _provisioner(tmp_path: Path, repo: Path, options: dict) -> tuple[Provisioner, object, object]:
    settings = Settings(home=tmp_path / "home")
    store = SessionStore(settings.db_path)
    base = git(repo, "rev-parse", "HEAD").strip()
    session = store.create_session(
        name="git-upload", mode="sandbox", backend="e2b", repo=str(repo), worktree=str(repo),
        branch="main", base_commit=base, options={"dry_run": True, **options},
    )  # fmt: skip
    prov = Provisioner(settings, E2BBackend(settings, retry_delays=(0.05,)),
                       Journal(store, session.id), settings.session_artifacts(session.id),
                       PhaseTimes())  # fmt: skip
    return prov, store, session


@pytest.mark.parametrize("upload", ["git", "tar-asked", "tar-attributes"])
def test_a_run_uploads_git_objects_or_says_why_not(emulator, tmp_path, upload):
    """The provisioner's whole cold path: pack, create, upload, baseline; both ways give the
    same baseline tree, and a run that cannot use git objects records why."""
    repo = make_repo(tmp_path / "repo")
    if upload == "tar-attributes":
        (repo / ".gitattributes").write_text("*.dat binary\n")
    options = {"upload": "tar"} if upload == "tar-asked" else {}
    prov, store, session = _provisioner(tmp_path, repo, options)
    packed = prov.pack(session)
    sb = prov.create_sandbox(store.get(session.id))
    try:
        prov.upload(sb, packed)
        row = store.get(session.id)
        events = [e for e in store.events(session.id) if e["kind"] == "upload_mode"]
        assert packed.compression == ("git" if upload == "git" else "gzip")
        if upload == "tar-attributes":
            assert events and ".gitattributes" in str(events[-1])
        else:
            assert not events
        res = sb.exec(["sh", "-c", 'cd "$1" && git rev-parse HEAD "HEAD^{tree}"', "sh",
                       sb.repo_dir])  # fmt: skip
        head, tree = res.text().split()
        assert head == row.sandbox_base
        if upload != "tar-attributes":  # (git objects cannot stand for that one)
            assert tree == pack_git(repo, tmp_path / "expect.pack").tree
        check = prov.verify_upload(sb, store.get(session.id), packed)
        assert check["verified"] == check["files"] == len(packed.selection.files)
    finally:
        sb.destroy()
        packed.path.unlink(missing_ok=True)
        store.close()
