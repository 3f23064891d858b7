"""Tests for sandboxrun.sync.pack and the `sandboxrun pack` command, on real git repos."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from sbr_testlib import edge_error
from typer.testing import CliRunner

from sandboxrun import process
from sandboxrun.cli import app
from sandboxrun.errors import PackError, UsageError
from sandboxrun.sync.pack import Selection, pack_worktree, select_files
from sandboxrun.sync.unpack import safe_extract

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    return process.run(["git", *GIT_ID, *args], cwd=repo).stdout


def write(root: Path, rel: str, data: bytes | str = "x\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git repository."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    return root


def commit_all(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "c")


def same_when_streamed(root: Path, sel: Selection) -> bool:
    """pack_worktree without a selection chooses (and reports) exactly what select_files did."""
    out = root.parent / "streamed.tar"
    packed = pack_worktree(root, out, compression="none").selection
    with tarfile.open(out) as tf:
        names = sorted(tf.getnames())
    out.unlink()
    return packed == sel and names == sel.files


def test_git_ignore_rules_match_git(repo: Path) -> None:
    """Nested .gitignore, negation, dir/ patterns, untracked and deleted files behave as in git."""
    write(repo, ".gitignore", "*.log\n!keep.log\nbuild/\n")
    write(repo, "src/app.py")
    write(repo, "x.log")
    write(repo, "keep.log")
    write(repo, "build/out.o")
    write(repo, "src/build/deep.o")  # dir/ pattern matches at any depth
    write(repo, "nested/.gitignore", "*.tmp\n!important.tmp\n")
    write(repo, "nested/a.tmp")
    write(repo, "nested/important.tmp")
    write(repo, "gone.py")
    commit_all(repo)
    (repo / "gone.py").unlink()  # tracked but deleted: not listed
    write(repo, "untracked.py")  # untracked, not ignored: listed
    write(repo, ".git/info/exclude", "private.txt\n")
    write(repo, "private.txt")

    sel = select_files(repo)

    assert sel.files == [
        ".gitignore",
        "keep.log",
        "nested/.gitignore",
        "nested/important.tmp",
        "src/app.py",
        "untracked.py",
    ]
    assert sel.source == "git"
    assert sel.total_bytes == sum((repo / f).stat().st_size for f in sel.files)
    assert same_when_streamed(repo, sel)


def test_tracked_dir_replaced_by_file(repo: Path) -> None:
    """A tracked a/b.py whose directory became a file is simply gone, not an error."""
    write(repo, "a/b.py")
    commit_all(repo)
    shutil.rmtree(repo / "a")
    write(repo, "a", "now a file\n")

    sel = select_files(repo)

    assert sel.files == ["a"]
    assert same_when_streamed(repo, sel)


def test_secrets_excluded_even_when_not_ignored(repo: Path) -> None:
    """The deny-list drops .env, keys and .ssh/ whether tracked or untracked; templates stay."""
    write(repo, "app.py")
    write(repo, ".env", "KEY=1\n")
    write(repo, "config/.env.production")
    write(repo, ".env.example")
    write(repo, "certs/key.pem")
    write(repo, "deploy/id_ed25519")
    write(repo, "deploy/id_ed25519.pub")
    write(repo, ".ssh/id_rsa")
    write(repo, ".ssh/id_rsa.pub")
    write(repo, "home/.aws/credentials")
    write(repo, "conf/secrets.yaml")
    commit_all(repo)
    write(repo, "untracked.key")  # untracked secrets too

    sel = select_files(repo)

    assert sel.files == [".env.example", "app.py", "deploy/id_ed25519.pub"]
    assert sel.excluded_secrets == [
        ".env",
        ".ssh/id_rsa",
        ".ssh/id_rsa.pub",
        "certs/key.pem",
        "conf/secrets.yaml",
        "config/.env.production",
        "deploy/id_ed25519",
        "home/.aws/credentials",
        "untracked.key",
    ]
    assert same_when_streamed(repo, sel)


def test_sandboxrunignore_removes_files(repo: Path) -> None:
    """.sandboxrunignore (gitignore syntax) drops files and counts them."""
    write(repo, "app.py")
    write(repo, "data/big.csv")
    write(repo, "data/small.csv")
    write(repo, "docs/a.md")
    write(repo, ".sandboxrunignore", "data/\n*.md\n")
    commit_all(repo)

    sel = select_files(repo)

    assert sel.files == [".sandboxrunignore", "app.py"]
    assert sel.excluded_by_ignorefile == ["data/big.csv", "data/small.csv", "docs/a.md"]
    assert same_when_streamed(repo, sel)


def test_sandboxruninclude_brings_back_ignored_and_secret_files(repo: Path) -> None:
    """.sandboxruninclude re-adds git-ignored files (even inside ignored dirs) and secrets."""
    write(repo, ".gitignore", "models/\n*.bin\nnode_modules/\n")
    write(repo, "app.py")
    write(repo, "models/small.bin", b"\x00\x01")
    write(repo, "models/huge.bin", b"\x02")
    write(repo, "deep/er/weights.bin", b"\x03")
    write(repo, "node_modules/pkg/index.js")
    write(repo, ".env.test", "TEST=1\n")
    write(repo, ".env", "PROD=1\n")
    write(repo, "also/ignored.bin")
    write(repo, ".sandboxrunignore", "also/\n")
    write(repo, ".sandboxruninclude", "/models/small.bin\nweights.bin\n.env.test\nalso/\n")
    commit_all(repo)

    sel = select_files(repo)

    assert sel.included_on_purpose == [".env.test", "deep/er/weights.bin", "models/small.bin"]
    assert "models/huge.bin" not in sel.files
    assert "node_modules/pkg/index.js" not in sel.files
    assert sel.excluded_secrets == [".env"]
    # .sandboxrunignore wins over .sandboxruninclude
    assert "also/ignored.bin" not in sel.files
    assert sel.files == sorted(
        [
            ".gitignore",
            ".sandboxruninclude",
            ".sandboxrunignore",
            "app.py",
            ".env.test",
            "deep/er/weights.bin",
            "models/small.bin",
        ]
    )
    assert same_when_streamed(repo, sel)


def test_symlinks_are_skipped_and_reported(repo: Path) -> None:
    """Symlinks are never packed (the unpack refuses them) and show up in skipped."""
    write(repo, "real.txt")
    (repo / "link.txt").symlink_to("real.txt")
    (repo / "outside").symlink_to("/etc")
    commit_all(repo)

    sel = select_files(repo)

    assert sel.files == ["real.txt"]
    assert [p for p, _ in sel.skipped] == ["link.txt", "outside"]
    assert all("symlink" in why for _, why in sel.skipped)
    assert same_when_streamed(repo, sel)


def test_plain_directory_honours_nested_gitignore(tmp_path: Path) -> None:
    """Outside git the walk applies nested .gitignore files, negations, dir/ and skips .git."""
    root = tmp_path / "plain"
    write(root, ".gitignore", "*.log\n!keep.log\nbuild/\n")
    write(root, "a.py")
    write(root, "x.log")
    write(root, "keep.log")
    write(root, "build/out.o")
    write(root, "sub/build/deep.o")
    write(root, "sub/.gitignore", "*.tmp\n!important.tmp\n/local/\n")
    write(root, "sub/a.tmp")
    write(root, "sub/important.tmp")
    write(root, "sub/local/x")
    write(root, "sub/more/local/y")  # /local/ is anchored to sub/, so this one stays
    write(root, "sub/deeper/.gitignore", "!*.log\n")  # a deeper file overrides a shallower
    write(root, "sub/deeper/z.log")
    write(root, ".git/config")  # not a repository (no HEAD): still never packed
    write(root, ".env")
    write(root, "build/keep.me")
    write(root, ".sandboxruninclude", "build/keep.me\n")

    sel = select_files(root)

    assert sel.source == "walk"
    assert sel.files == [
        ".gitignore",
        ".sandboxruninclude",
        "a.py",
        "build/keep.me",
        "keep.log",
        "sub/.gitignore",
        "sub/deeper/.gitignore",
        "sub/deeper/z.log",
        "sub/important.tmp",
        "sub/more/local/y",
    ]
    assert sel.excluded_secrets == [".env"]
    assert sel.included_on_purpose == ["build/keep.me"]
    assert same_when_streamed(root, sel)


def make_tree(root: Path) -> dict[str, bytes]:
    """Binary, empty, executable, unicode, long-named and sparse-big files."""
    rng = random.Random(7)
    files = {
        "bin/blob.dat": rng.randbytes(300_000),
        "empty": b"",
        "run.sh": b"#!/bin/sh\necho hi\n",
        "ünïcödé/名前.txt": b"unicode\n",
        "/".join(["deep"] * 30) + "/long-name.txt": b"long\n" * 100,
        "text.py": b"print('hello')\n" * 5000,
    }
    for rel, data in files.items():
        write(root, rel, data)
    os.chmod(root / "run.sh", 0o755)
    return files


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_pack_round_trip_is_byte_identical(repo: Path, tmp_path: Path, compression: str) -> None:
    """pack -> safe_extract gives back every byte and the exec bit."""
    if compression == "zstd" and process.which("zstd") is None:
        pytest.skip("zstd not installed")
    files = make_tree(repo)
    commit_all(repo)
    out = tmp_path / f"out.{compression}"

    result = pack_worktree(repo, out, compression=compression)

    assert result.file_count == len(files)
    assert result.bytes_in == sum(len(d) for d in files.values())
    assert result.bytes_out == out.stat().st_size
    dest = tmp_path / "dest"
    names = safe_extract(out, dest)
    assert sorted(names) == sorted(files)
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data, rel
    assert (dest / "run.sh").stat().st_mode & 0o111
    assert not (dest / "text.py").stat().st_mode & 0o111
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_members_are_plain_files_owned_by_root(repo: Path, tmp_path: Path) -> None:
    """Members: regular files, relative names, mode, mtime, uid/gid 0, no user names."""
    make_tree(repo)
    os.utime(repo / "text.py", (1_600_000_000, 1_600_000_000))
    commit_all(repo)
    out = tmp_path / "o.tar.gz"
    pack_worktree(repo, out)

    with tarfile.open(out, "r|gz") as tf:  # stream mode: needs a single gzip member
        members = {m.name: m for m in tf}
    assert all(m.isreg() for m in members.values())
    assert all(
        m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members.values()
    )
    assert members["run.sh"].mode == 0o755
    assert members["text.py"].mode == 0o644
    assert members["text.py"].mtime == 1_600_000_000
    assert not any(n.startswith("/") for n in members)


def test_gzip_output_passes_system_tools(repo: Path, tmp_path: Path) -> None:
    """gzip -t and tar -tzf accept the output and list exactly the selected files."""
    files = make_tree(repo)
    commit_all(repo)
    out = tmp_path / "o.tar.gz"
    pack_worktree(repo, out)

    process.run(["gzip", "-t", str(out)])
    listing = process.run(["tar", "-tzf", str(out)]).stdout.splitlines()
    assert sorted(listing) == sorted(files)


def test_big_file_is_streamed(repo: Path, tmp_path: Path) -> None:
    """A file larger than the read-whole threshold (32 MiB) packs and round-trips."""
    big = repo / "big.img"
    with open(big, "wb") as fh:  # sparse: cheap to make, still 40 MiB to read
        fh.truncate(40 << 20)
        fh.seek(20 << 20)
        fh.write(b"middle")
    commit_all(repo)
    out = tmp_path / "o.tar.gz"
    seen: list[tuple[int, int]] = []

    result = pack_worktree(repo, out, progress=lambda done, total: seen.append((done, total)))

    assert result.bytes_in == 40 << 20
    assert seen[-1] == (40 << 20, 40 << 20)
    dest = tmp_path / "d"
    safe_extract(out, dest)
    assert (dest / "big.img").stat().st_size == 40 << 20
    with open(dest / "big.img", "rb") as fh:
        fh.seek(20 << 20)
        assert fh.read(6) == b"middle"


def test_output_inside_tree_never_packs_itself(repo: Path) -> None:
    """Packing twice into the tree does not put the first tarball into the second."""
    write(repo, "a.py")
    commit_all(repo)
    out = repo / "repo.tar.gz"
    pack_worktree(repo, out)

    second = pack_worktree(repo, out)

    assert second.selection.files == ["a.py"]
    assert ("repo.tar.gz", "the output tarball itself") in second.selection.skipped
    with tarfile.open(out) as tf:
        assert tf.getnames() == ["a.py"]


def test_files_changed_after_selection_are_skipped(repo: Path, tmp_path: Path) -> None:
    """Files deleted, or swapped for a symlink or fifo, after selection are skipped safely."""
    for name in ("a.py", "b.py", "c.py", "d.py"):
        write(repo, name)
    commit_all(repo)
    sel = select_files(repo)
    (repo / "b.py").unlink()
    (repo / "c.py").unlink()
    (repo / "c.py").symlink_to("/etc/passwd")
    (repo / "d.py").unlink()
    os.mkfifo(repo / "d.py")  # opening it without O_NONBLOCK would hang forever

    result = pack_worktree(repo, tmp_path / "o.tar.gz", selection=sel)

    assert result.selection.files == ["a.py"]
    assert result.selection.skipped == [
        ("b.py", "vanished before packing"),
        ("c.py", "became a symlink before packing"),
        ("d.py", "no longer a regular file"),
    ]
    with tarfile.open(tmp_path / "o.tar.gz") as tf:
        assert tf.getnames() == ["a.py"]


def test_missing_zstd_raises_with_gzip_hint(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the zstd program, zstd packing fails clearly and leaves no temp file."""
    write(repo, "a.py")
    commit_all(repo)
    sel = select_files(repo)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(PackError) as info:
        pack_worktree(repo, out_dir / "o.tar.zst", compression="zstd", selection=sel)

    assert "zstd" in info.value.message
    assert "gzip" in (info.value.hint or "")
    assert list(out_dir.iterdir()) == []


def test_bad_arguments(repo: Path, tmp_path: Path) -> None:
    """Unknown compression is a usage error; a missing directory a PackError."""
    with pytest.raises(UsageError):
        pack_worktree(repo, tmp_path / "o", compression="bz2")
    with pytest.raises(PackError):
        pack_worktree(repo, tmp_path / "no" / "such" / "o.tar.gz")
    with pytest.raises(PackError):
        select_files(tmp_path / "missing")


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli_repo(repo: Path) -> Path:
    write(repo, "app.py", "print(1)\n")
    write(repo, "lib/util.py")
    write(repo, ".env", "KEY=1\n")
    write(repo, "data/x.csv")
    write(repo, ".sandboxrunignore", "data/\n")
    commit_all(repo)
    return repo


def test_cli_list_prints_exactly_the_files(cli_repo: Path) -> None:
    """`pack --list` prints one path per line (secrets and why on stderr) and writes nothing."""
    result = CliRunner().invoke(app, ["pack", str(cli_repo), "--list"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [".sandboxrunignore", "app.py", "lib/util.py"]
    assert result.stderr.splitlines() == ["excluded: .env (name: environment file)"]
    assert not list(cli_repo.glob("*.tar.gz"))


def test_cli_summary_writes_default_tarball(
    cli_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --output the tarball lands in the current directory as <dir>.tar.gz."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    result = CliRunner().invoke(app, ["pack", str(cli_repo)])

    assert result.exit_code == 0, result.output
    out = work / "repo.tar.gz"
    assert out.exists()
    assert "3 files" in result.output
    assert "excluded as secrets (1): .env" in result.output
    assert "excluded by .sandboxrunignore: 1 files" in result.output
    assert str(out) in result.output


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_cli_json_shape(cli_repo: Path, tmp_path: Path, compression: str) -> None:
    """`pack --json` prints one object: selection summary plus the output."""
    if compression == "zstd" and process.which("zstd") is None:
        pytest.skip("zstd not installed")
    out = tmp_path / "o.tar.x"
    result = CliRunner().invoke(
        app, ["pack", str(cli_repo), "--json", "-c", compression, "--output", str(out)]
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {
        "root",
        "source",
        "file_count",
        "total_bytes",
        "excluded_secrets",
        "secret_reasons",
        "excluded_by_ignorefile",
        "included_on_purpose",
        "skipped",
        "output",
    }
    assert data["file_count"] == 3
    assert data["excluded_secrets"] == [".env"]
    assert data["secret_reasons"] == {".env": "name: environment file"}
    assert data["output"]["path"] == str(out)
    assert data["output"]["compression"] == compression
    assert data["output"]["bytes_out"] == out.stat().st_size


def test_cli_list_json_includes_files(cli_repo: Path) -> None:
    """`pack --list --json` adds the full file list and writes nothing."""
    result = CliRunner().invoke(app, ["pack", str(cli_repo), "--list", "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["files"] == [".sandboxrunignore", "app.py", "lib/util.py"]
    assert data["excluded_by_ignorefile"] == ["data/x.csv"]


#: the two ways people start the CLI: the module and the installed console script
ENTRY_POINTS = {
    "module": [sys.executable, "-m", "sandboxrun"],
    "console-script": [str(Path(sys.executable).with_name("sandboxrun"))],
}


def run_entry(entry: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENTRY_POINTS[entry], *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_cli_rejects_unknown_compression(cli_repo: Path, entry: str) -> None:
    """A bad --compression value is a usage error (exit 2) naming the value and the choices."""
    proc = run_entry(entry, "pack", str(cli_repo), "-c", "bz2")

    assert proc.returncode == 2, proc.stderr
    assert "'bz2' is not one of" in proc.stderr and "gzip" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_cli_missing_path_is_an_error(tmp_path: Path, entry: str) -> None:
    """A path that is not a directory: the CLI edge prints ``Error:`` and ``Hint:``, exit 1."""
    proc = run_entry(entry, "pack", str(tmp_path / "nope"), "--list")

    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert message == f"{tmp_path / 'nope'} is not a directory"
    assert hint and "path of a work tree" in hint
    assert proc.stdout == ""


@pytest.mark.skipif(shutil.which("tar") is None, reason="tar not installed")
def test_executable_bit_survives_system_tar(repo: Path, tmp_path: Path) -> None:
    """GNU tar extracting our tarball keeps the exec bit too."""
    make_tree(repo)
    commit_all(repo)
    out = tmp_path / "o.tar.gz"
    pack_worktree(repo, out)
    dest = tmp_path / "x"
    dest.mkdir()

    process.run(["tar", "-xzf", str(out), "-C", str(dest)])

    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) & 0o100
