"""Tests for sandboxrun.sync.unpack: hostile archives are refused, good ones land intact."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sandboxrun import process
from sandboxrun.errors import PackError, UnsafeArchiveError
from sandboxrun.sync.unpack import detect_compression, manifest, safe_extract, verify_tree

needs_zstd = pytest.mark.skipif(process.which("zstd") is None, reason="zstd not installed")


def file_member(name: str, data: bytes = b"data\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str) -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def zstd_file(path: Path, tar_path: Path) -> Path:
    process.run(["zstd", "-q", "-f", "-o", str(path), str(tar_path)])
    return path


HOSTILE: dict[str, Callable[[], tuple[tarfile.TarInfo, bytes | None]]] = {
    "symlink": lambda: special_member("evil", tarfile.SYMTYPE, "/etc/passwd"),
    "relative symlink": lambda: special_member("sub/up", tarfile.SYMTYPE, "../../.."),
    "hardlink": lambda: special_member("hard", tarfile.LNKTYPE, "etc/passwd"),
    "dotdot": lambda: file_member("../escape.txt"),
    "nested dotdot": lambda: file_member("a/../../escape.txt"),
    "absolute": lambda: file_member("/tmp/sandboxrun-abs-escape.txt"),
    "git config": lambda: file_member(".git/config"),
    "git hook deep": lambda: file_member("sub/.GIT/hooks/pre-commit"),
    "git file": lambda: file_member(".git"),
    "char device": lambda: special_member("dev/null", tarfile.CHRTYPE),
    "block device": lambda: special_member("dev/sda", tarfile.BLKTYPE),
    "fifo": lambda: special_member("pipe", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_refused_by_name(tmp_path: Path, case: str) -> None:
    """Each unsafe member raises UnsafeArchiveError naming it, and nothing escapes."""
    info, data = HOSTILE[case]()
    tarball = make_tar(tmp_path / "evil.tar.gz", [file_member("ok.txt"), (info, data)], "w:gz")
    dest = tmp_path / "dest"

    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(tarball, dest)

    assert repr(info.name) in exc.value.message
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/sandboxrun-abs-escape.txt").exists()
    assert not (dest / ".git").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


@needs_zstd
def test_hostile_member_is_refused_in_zstd_too(tmp_path: Path) -> None:
    """The zstd path runs the same checks (and stops zstd cleanly)."""
    plain = make_tar(
        tmp_path / "evil.tar",
        [file_member("ok.txt", os.urandom(200_000)), HOSTILE["symlink"]()],
        "w",
    )
    tarball = zstd_file(tmp_path / "evil.tar.zst", plain)

    with pytest.raises(UnsafeArchiveError, match="'evil'"):
        safe_extract(tarball, tmp_path / "dest")


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path) -> None:
    """A symlink already in dest (even pointing inside) never redirects a member."""
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    (dest / "via").symlink_to("real")
    (dest / "file").symlink_to("real/target")
    for name in ("via/x.txt", "file"):
        tarball = make_tar(tmp_path / "t.tar", [file_member(name)], "w")
        with pytest.raises(UnsafeArchiveError, match="symlink"):
            safe_extract(tarball, dest)
    assert list((dest / "real").iterdir()) == []


@pytest.mark.parametrize("mode", ["w:gz", "w", "zstd"])
def test_good_archive_extracts_and_detects_compression(tmp_path: Path, mode: str) -> None:
    """Regular files and directories extract; names come back; compression is sniffed."""
    if mode == "zstd" and process.which("zstd") is None:
        pytest.skip("zstd not installed")
    members = [
        (tarfile.TarInfo("pkg"), None),
        file_member("pkg/a.txt", b"alpha"),
        file_member("./pkg/b.bin", bytes(range(256))),
    ]
    members[0][0].type = tarfile.DIRTYPE
    members[0][0].mode = 0o755
    if mode == "zstd":
        tarball = zstd_file(tmp_path / "t.tar.zst", make_tar(tmp_path / "t.tar", members, "w"))
        expected = "zstd"
    else:
        tarball = make_tar(tmp_path / "t.tar.x", members, mode)
        expected = "gzip" if mode == "w:gz" else "none"

    assert detect_compression(tarball) == expected
    names = safe_extract(tarball, tmp_path / "dest")

    assert names == ["pkg/a.txt", "pkg/b.bin"]
    assert (tmp_path / "dest/pkg/a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "dest/pkg/b.bin").read_bytes() == bytes(range(256))


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    """Concatenated gzip members (pigz, cat a.gz b.gz) extract completely."""
    raw = make_tar(
        tmp_path / "t.tar", [file_member(f"f{i}", os.urandom(30_000)) for i in range(4)], "w"
    ).read_bytes()
    half = len(raw) // 2
    tarball = tmp_path / "t.tar.gz"
    tarball.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))

    assert safe_extract(tarball, tmp_path / "dest") == ["f0", "f1", "f2", "f3"]


def test_corrupt_archive_raises_pack_error(tmp_path: Path) -> None:
    """A truncated tarball is reported as unreadable, not as a crash."""
    raw = make_tar(tmp_path / "t.tar.gz", [file_member("a", os.urandom(100_000))], "w:gz")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(raw.read_bytes()[:5000])

    with pytest.raises(PackError, match="cannot read archive"):
        safe_extract(broken, tmp_path / "dest")


def test_manifest_and_verify_tree(tmp_path: Path) -> None:
    """verify_tree reports files that are missing, changed or replaced by a symlink."""
    src = tmp_path / "src"
    for name in ("a.txt", "b/c.bin", "d.txt", "e.txt"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode() * 1000)
    expected = manifest(src, ["a.txt", "b/c.bin", "d.txt", "e.txt"])
    assert len(expected) == 4
    assert verify_tree(src, expected) == []

    (src / "a.txt").write_bytes(b"changed")
    (src / "d.txt").unlink()
    (src / "e.txt").unlink()
    (src / "e.txt").symlink_to("b/c.bin")

    assert verify_tree(src, expected) == ["a.txt", "d.txt", "e.txt"]
