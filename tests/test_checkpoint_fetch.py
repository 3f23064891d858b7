"""Checkpoints and the transfer under them, on a real local sandbox: real git in the sandbox,
real packs, a real store, the real applier.

A checkpoint is the final collection's producer run while the agent works (incremental git
packs in ``artifacts/checkpoint/``), landed through the same checked path; ``fetch`` streams,
resumes and checks what comes out of a sandbox.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from test_collect import BRANCH, Pipeline

from sandboxrun.config import Settings
from sandboxrun.errors import BackendError
from sandboxrun.sandbox.apply import load_state
from sandboxrun.sandbox.backends.base import control_dir
from sandboxrun.sandbox.checkpoint import (
    CHECKPOINT_MESSAGE,
    checkpoint_dir,
    checkpoint_pending,
    land_checkpoint,
    mark_lost,
    read_checkpoint,
    take_checkpoint,
)
from sandboxrun.sandbox.gitpack import collect_patches
from sandboxrun.sandbox.journal import Journal
from sandboxrun.sandbox.lifetime import Run
from sandboxrun.sandbox.transfer import fetch, redact_file
from sandboxrun.store import SessionStore


class Checkpointed(Pipeline):
    """The collection pipeline of test_collect, with a session row and a Run for checkpoints."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, {"README.md": "# project\n", "src/app.py": "print('hi')\n"})
        self.store = SessionStore(tmp / "state.db")
        row = self.store.create_session(
            name="cp", mode="sandbox", status="running", backend="local", sandbox_id=self.sandbox.id,
            sandbox_base=self.session.sandbox_base, worktree=str(self.worktree), branch=BRANCH,
            base_commit=self.old, repo=str(self.repo), options={"branch_head": self.old},
        )  # fmt: skip
        self.sid = row.id
        self.run = Run(Journal(self.store, row.id), self.sandbox, Settings(home=tmp / "home"),
                       self.artifacts)  # fmt: skip

    def checkpoint(self) -> dict:
        info = take_checkpoint(self.run)
        assert info is not None, self.store.events(self.sid)
        return info

    def pack_objects(self, number: int) -> set[str]:
        idx = checkpoint_dir(self.artifacts) / "objects" / "pack" / f"checkpoint-{number:04d}.idx"
        with open(idx, "rb") as fh:
            out = subprocess.run(["git", "show-index"], stdin=fh, capture_output=True,
                                 check=True).stdout.decode()  # fmt: skip
        return {line.split()[1] for line in out.splitlines()}

    def log(self, rev: str = BRANCH) -> list[str]:
        return self.git_local("log", "--format=%s", f"{self.old}..{rev}").splitlines()


@pytest.fixture
def cp(tmp_path: Path):
    c = Checkpointed(tmp_path)
    yield c
    c.store.close()


def test_checkpoints_are_incremental_packs_of_the_collections_format(cp: Checkpointed) -> None:
    cp.write("one.txt", "1\n")
    cp.agent("add", "-A")
    cp.agent("commit", "-qm", "agent: one")
    cp.write("draft.txt", "draft\n")
    first = cp.checkpoint()
    assert first["number"] == 1 and first["commits"] == 1 and first["uncommitted"]
    one = cp.agent("rev-parse", "HEAD").strip()
    cp.write("two.txt", "2\n")
    cp.agent("add", "two.txt")
    cp.agent("commit", "-qm", "agent: two")
    second = cp.checkpoint()
    assert second["number"] == 2 and second["commits"] == 2
    # the second pack holds only what is new: not the first commit, not the unchanged draft
    new = cp.pack_objects(2)
    draft = cp.agent("hash-object", "draft.txt").strip()
    assert one not in new and draft not in new and cp.agent("rev-parse", "HEAD").strip() in new
    assert second["fetched_bytes"] < second["kept_bytes"]
    # nothing changed: no third pack
    assert cp.checkpoint()["number"] == 2
    assert not (checkpoint_dir(cp.artifacts) / "objects" / "pack" / "checkpoint-0003.pack").exists()


def test_a_lost_run_lands_its_last_checkpoint_through_the_checked_path(cp: Checkpointed) -> None:
    cp.write("one.txt", "1\n")
    cp.agent("add", "-A")
    cp.agent("commit", "-qm", "agent: one")
    cp.checkpoint()
    cp.write("left.txt", "left\n")
    cp.write(".claude/settings.json", '{"hooks": {}}\n')  # sensitive: kept back
    cp.checkpoint()
    art = cp.artifacts
    # `status`'s path: the session says lost and what is kept, the branch is untouched
    mark_lost(cp.store, cp.store.get(cp.sid), art, "the sandbox is gone")
    st = cp.store.get(cp.sid)
    assert st.status == "lost" and "not applied yet" in st.error and "attach cp" in st.error
    assert cp.tip() == cp.old and checkpoint_pending(art)
    # the explicit step lands it: the agent's commit as it was, the leftover as one commit
    note = land_checkpoint(cp.store, cp.store.get(cp.sid), art, stale_after=300)
    assert "applied to branch" in note and ".claude/settings.json" in note
    assert cp.log() == [CHECKPOINT_MESSAGE, "agent: one"]
    assert {"one.txt", "left.txt"} <= cp.files() and ".claude/settings.json" not in cp.files()
    assert cp.clean() and not checkpoint_pending(art)
    assert load_state(checkpoint_dir(art))["refused"][0][0] == ".claude/settings.json"
    st = cp.store.get(cp.sid)
    assert st.status == "lost" and st.error.startswith("the sandbox is gone; kept the last")
    assert len(st.result_commits) == 2


def test_a_branch_moved_while_the_run_was_lost_is_left_alone(cp: Checkpointed) -> None:
    """The user's commit is never built on or overwritten: the checkpoint goes on a side ref."""
    cp.write("agent.txt", "agent\n")
    cp.checkpoint()
    (cp.worktree / "mine.txt").write_text("mine\n")
    subprocess.run(["git", "-C", str(cp.worktree), "add", "mine.txt"], check=True)
    subprocess.run(["git", "-C", str(cp.worktree), "-c", "user.name=U", "-c", "user.email=u@x",
                    "commit", "-qm", "user: mine"], check=True)  # fmt: skip
    moved = cp.tip()
    mark_lost(cp.store, cp.store.get(cp.sid), cp.artifacts, "the sandbox is gone", land=True,
              stale_after=300)  # fmt: skip
    assert cp.tip() == moved and cp.clean()
    st = cp.store.get(cp.sid)
    ref = read_checkpoint(cp.artifacts)["side_ref"]
    assert ref.startswith("refs/sandboxrun/checkpoint/cp-") and ref in st.error
    assert "user: mine" in st.error and "left as it is" in st.error
    assert cp.log(ref) == [CHECKPOINT_MESSAGE]
    assert "agent.txt" in cp.files(ref) and "mine.txt" not in cp.files(ref)
    assert not checkpoint_pending(cp.artifacts)


def test_a_lost_run_without_a_checkpoint_keeps_nothing_and_says_so(cp: Checkpointed) -> None:
    cp.store.update(cp.sid, agent_pgid=4242)  # its agent had started
    mark_lost(cp.store, cp.store.get(cp.sid), cp.artifacts, "the sandbox is gone", land=True,
              stale_after=300)  # fmt: skip
    st = cp.store.get(cp.sid)
    assert st.status == "lost" and "nothing was kept" in st.error and cp.tip() == cp.old


def test_a_run_lost_before_its_agent_started_says_nothing_was_lost(cp: Checkpointed) -> None:
    """Lost while the sandbox was made ready: there was no work to lose, and it says so."""
    mark_lost(cp.store, cp.store.get(cp.sid), cp.artifacts, "the sandbox is gone", land=True)
    st = cp.store.get(cp.sid)
    assert st.status == "lost" and "before the agent started" in st.error
    assert "nothing of its work was lost" in st.error and cp.tip() == cp.old


def test_the_final_collection_brings_back_a_finished_pack_as_it_is(cp: Checkpointed) -> None:
    """After a broken transfer, `attach` gets the same pack (same bytes: the download resumes)."""
    cp.write("x.txt", "x\n")
    staging = cp.tmp / "collect"
    first = collect_patches(cp.sandbox, cp.session, subdir="collect", staging=staging)
    made = Path(control_dir(cp.sandbox)) / "collect" / "work.pack"
    stamp = made.stat().st_mtime_ns, made.stat().st_ino
    cp.write("y.txt", "a change the stopped agent could not have made\n")
    again = collect_patches(cp.sandbox, cp.session, subdir="collect", staging=staging,
                            reuse=True)  # fmt: skip
    assert (made.stat().st_mtime_ns, made.stat().st_ino) == stamp
    assert again.manifest.tree == first.manifest.tree
    fresh = collect_patches(cp.sandbox, cp.session, subdir="collect", staging=staging)
    assert fresh.manifest.tree != first.manifest.tree  # without reuse: packed anew


# -- the transfer ------------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path):
    """A 1 MB file in a local sandbox, and where to fetch it to."""
    from sandboxrun.sandbox.backends.local import LocalBackend

    sandbox = LocalBackend(Settings(home=tmp_path / "home")).create(
        "s1", timeout_s=60, env={}, metadata={}
    )
    path = Path(sandbox.home) / "big.bin"
    data = bytes(range(256)) * 4000
    path.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    return sandbox, str(path), data, out


def test_fetch_resumes_from_the_bytes_on_disk(remote):
    sandbox, path, data, out = remote
    sha = hashlib.sha256(data).hexdigest()
    # a transfer broken after 1000 bytes of this very file version
    (out / "f.part").write_bytes(data[:1000])
    (out / "f.part.sha").write_text(sha)
    fetch(sandbox, path, out / "f", len(data), sha)
    assert (out / "f").read_bytes() == data
    assert not (out / "f.part").exists() and not (out / "f.part.sha").exists()


def test_a_partial_of_another_version_starts_over(remote):
    sandbox, path, data, out = remote
    (out / "f.part").write_bytes(b"x" * 5000)
    (out / "f.part.sha").write_text("0" * 64)  # an older version of the file
    reads = Reads(sandbox)
    fetch(reads, path, out / "f", len(data), hashlib.sha256(data).hexdigest())  # type: ignore[arg-type]
    assert (out / "f").read_bytes() == data and reads.offsets == [0]


class Reads:
    """A real sandbox, with the offsets ``fetch`` asked it to read from written down."""

    def __init__(self, sandbox) -> None:
        self.sandbox, self.offsets = sandbox, []

    def __getattr__(self, name: str):
        return getattr(self.sandbox, name)

    def read_file(self, path: str, offset: int = 0) -> bytes:
        self.offsets.append(offset)
        return self.sandbox.read_file(path, offset)


def test_bytes_of_another_version_that_are_still_a_prefix_are_kept(remote):
    """The file was made again (another SHA-256) but starts with the bytes on disk: checked in
    the sandbox, they are kept and only the rest is read."""
    sandbox, path, data, out = remote
    (out / "f.part").write_bytes(data[:300_000])
    (out / "f.part.sha").write_text("0" * 64)
    reads = Reads(sandbox)
    fetch(reads, path, out / "f", len(data), hashlib.sha256(data).hexdigest())  # type: ignore[arg-type]
    assert (out / "f").read_bytes() == data and reads.offsets == [300_000]


def test_damaged_bytes_are_refused_and_dropped(remote):
    sandbox, path, data, out = remote
    sha = hashlib.sha256(data).hexdigest()
    (out / "f.part").write_bytes(b"y" * 1000)  # claims to be this version: lies
    (out / "f.part.sha").write_text(sha)
    with pytest.raises(BackendError, match="damaged"):
        fetch(sandbox, path, out / "f", len(data), sha)
    assert not (out / "f").exists() and not (out / "f.part").exists()
    fetch(sandbox, path, out / "f", len(data), sha)  # a second try starts clean
    assert (out / "f").read_bytes() == data


def test_redact_file_finds_values_split_across_chunks(tmp_path):
    """Saved logs are redacted in bounded memory, even where a value straddles a chunk."""
    from sandboxrun.redact import Redactor

    secret = "sk-ant-api03-" + "k" * 40
    red = Redactor({secret: "ANTHROPIC_API_KEY"})
    path = tmp_path / "agent.log"
    edge = (1 << 20) - 10  # the value starts 10 bytes before the first chunk ends
    path.write_bytes(b"a" * edge + secret.encode() + b"\n" + b"b" * 5000 + secret.encode())
    redact_file(path, red)
    data = path.read_bytes()
    assert secret.encode() not in data
    assert data.count(b"[redacted:ANTHROPIC_API_KEY]") == 2
    assert data.startswith(b"a" * edge) and data.endswith(b"[redacted:ANTHROPIC_API_KEY]")
