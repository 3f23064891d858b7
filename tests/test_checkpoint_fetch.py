"""Producing and fetching the agent's work (sandboxrun/sandbox/checkpoint.py) on a real local
sandbox: real git in the sandbox, real files; resume, damage and a changed file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from sbr_testlib import git

from sandboxrun.config import Settings
from sandboxrun.errors import BackendError
from sandboxrun.sandbox.backends.base import control_dir
from sandboxrun.sandbox.backends.local import LocalBackend
from sandboxrun.sandbox.checkpoint import Manifest, fetch, produce


@pytest.fixture
def work(tmp_path):
    """A local sandbox whose repo has a baseline, one commit of the agent's and a leftover."""
    settings = Settings(home=tmp_path / "home")
    sandbox = LocalBackend(settings).create("s1", timeout_s=60, env={}, metadata={})
    repo = Path(sandbox.repo_dir)
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "b.txt").write_text("b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "agent: b")
    (repo / "big.bin").write_bytes(bytes(range(256)) * 4000)  # 1 MB, uncommitted
    session = SimpleNamespace(sandbox_base=base)
    return sandbox, session, tmp_path / "out"


def test_produce_makes_a_manifest_of_both_files(work):
    sandbox, session, _ = work
    m = produce(sandbox, session, None, "collect")  # type: ignore[arg-type]
    assert m.commits == 1 and m.since == session.sandbox_base
    out = Path(control_dir(sandbox)) / "collect"
    for name, (size, sha) in m.files.items():
        data = (out / name).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    assert b"Subject: [PATCH] agent: b" in (out / "commits.mbox").read_bytes()
    assert b"big.bin" in (out / "changes.diff").read_bytes()
    # since the agent's last commit: no commits to bring back, the leftover still is
    head = m.head
    m2 = produce(sandbox, session, head, "checkpoint")  # type: ignore[arg-type]
    assert m2.since == head and m2.files["commits.mbox"][0] == 0
    assert m2.files["changes.diff"] == m.files["changes.diff"]


def test_fetch_resumes_from_the_bytes_on_disk(work):
    sandbox, session, out = work
    out.mkdir()
    m = produce(sandbox, session, None, "collect")  # type: ignore[arg-type]
    size, sha = m.files["changes.diff"]
    remote = f"{control_dir(sandbox)}/collect/changes.diff"
    whole = Path(remote).read_bytes()
    # a transfer broken after 1000 bytes of this very file version
    (out / "changes.diff.part").write_bytes(whole[:1000])
    (out / "changes.diff.part.sha").write_text(sha)
    fetch(sandbox, remote, out / "changes.diff", size, sha)
    assert (out / "changes.diff").read_bytes() == whole
    assert not (out / "changes.diff.part").exists()
    assert not (out / "changes.diff.part.sha").exists()


def test_a_partial_of_another_version_starts_over(work):
    sandbox, session, out = work
    out.mkdir()
    m = produce(sandbox, session, None, "collect")  # type: ignore[arg-type]
    size, sha = m.files["changes.diff"]
    remote = f"{control_dir(sandbox)}/collect/changes.diff"
    (out / "changes.diff.part").write_bytes(b"x" * 5000)
    (out / "changes.diff.part.sha").write_text("0" * 64)  # an older version of the file
    fetch(sandbox, remote, out / "changes.diff", size, sha)
    assert (out / "changes.diff").read_bytes() == Path(remote).read_bytes()


def test_damaged_bytes_are_refused_and_dropped(work):
    sandbox, session, out = work
    out.mkdir()
    m = produce(sandbox, session, None, "collect")  # type: ignore[arg-type]
    size, sha = m.files["changes.diff"]
    remote = f"{control_dir(sandbox)}/collect/changes.diff"
    (out / "changes.diff.part").write_bytes(b"y" * 1000)  # claims to be this version: lies
    (out / "changes.diff.part.sha").write_text(sha)
    with pytest.raises(BackendError, match="damaged"):
        fetch(sandbox, remote, out / "changes.diff", size, sha)
    assert not (out / "changes.diff").exists() and not (out / "changes.diff.part").exists()
    fetch(sandbox, remote, out / "changes.diff", size, sha)  # a second try starts clean
    assert (out / "changes.diff").read_bytes() == Path(remote).read_bytes()


def test_manifest_parse_refuses_a_truncated_answer():
    with pytest.raises(BackendError, match="manifest"):
        Manifest.parse("head abc\nsince def\ncommits 1\nfile commits.mbox 10 aa\n")


def test_redact_file_finds_values_split_across_chunks(tmp_path):
    """Saved patches are redacted in bounded memory, even where a value straddles a chunk."""
    from sandboxrun.redact import Redactor
    from sandboxrun.sandbox.checkpoint import redact_file

    secret = "sk-ant-api03-" + "k" * 40
    red = Redactor({secret: "ANTHROPIC_API_KEY"})
    path = tmp_path / "changes.diff"
    edge = (1 << 20) - 10  # the value starts 10 bytes before the first chunk ends
    path.write_bytes(b"a" * edge + secret.encode() + b"\n" + b"b" * 5000 + secret.encode())
    redact_file(path, red)
    data = path.read_bytes()
    assert secret.encode() not in data
    assert data.count(b"[redacted:ANTHROPIC_API_KEY]") == 2
    assert data.startswith(b"a" * edge) and data.endswith(b"[redacted:ANTHROPIC_API_KEY]")
