"""A wait that ends lets the transcript catch up with the hooks.

Claude Code's Stop hook can fire before the turn's records reach the transcript (CI caught
``message_workers(wait='any')`` followed by ``read_worker_logs`` missing the whole turn). A child
done by its hooks waits, bounded, until its transcript holds its last prompt and an answer.
Real SQLite, a real tmux pane (the state reads it), real transcript files written late.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from sandboxrun.local import wait as wait_mod
from sandboxrun.local.states import prompt_hash
from sandboxrun.store import SessionStore, Status


def user(text: str) -> dict:
    return {"type": "user", "message": {"role": "user", "content": text}, "sessionId": "c1"}


def assistant(text: str) -> dict:
    content = [{"type": "text", "text": text}]
    return {"type": "assistant", "message": {"role": "assistant", "content": content}}


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def child(store, tmp_path, tmux_server):
    """An idle local child (Stop hook seen) with a live pane and a transcript of one turn."""
    tmux_server.new_session("t_child_a", ["sleep", "600"], cwd=tmp_path)
    transcript = tmp_path / "c1.jsonl"
    write(transcript, [user("say hello"), assistant("ack: say hello")])
    s = store.create_session(
        name="a", mode="local", backend="tmux", repo=str(tmp_path), branch="b",
        tmux_session="t_child_a", started_at=time.time(),
    )  # fmt: skip
    store.set_status(s.id, Status.RUNNING)
    store.update(s.id, activity="idle", activity_at=time.time(), transcript_path=str(transcript))
    return store.get(s.id), transcript


def prompt_event(store: SessionStore, session_id: str, text: str, **extra) -> None:
    payload = {"event": "UserPromptSubmit", "claude_session_id": "c1", **extra}
    store.add_event(session_id, "hook", {**payload, "prompt_sha256": prompt_hash(text)})


def test_holds_turn_needs_the_prompt_and_an_answer_after_it():
    turn = [{"role": "user", "text": "one"}, {"role": "assistant", "text": "ack"}]
    assert wait_mod.holds_turn(turn, prompt_hash("one"))
    assert not wait_mod.holds_turn(turn[:1], prompt_hash("one"))  # no answer yet
    assert not wait_mod.holds_turn(turn, prompt_hash("two"))  # the prompt not written yet
    again = [*turn, {"role": "user", "text": "one"}]  # the same words sent again, unanswered
    assert not wait_mod.holds_turn(again, prompt_hash("one"))
    pasted = [{"role": "user", "text": "  a\r\nb \n"}, {"role": "assistant", "text": "ok"}]
    assert wait_mod.holds_turn(pasted, prompt_hash("a\nb"))


def test_nothing_to_wait_for_without_a_prompt_a_transcript_or_for_a_slash_command(store, child):
    row, transcript = child
    assert wait_mod.turn_recorded(store, row)  # no prompt hook recorded
    prompt_event(store, row.id, "/clear", slash=True)
    assert wait_mod.turn_recorded(store, row)
    prompt_event(store, row.id, "and goodbye")
    assert not wait_mod.turn_recorded(store, row)
    transcript.unlink()
    assert wait_mod.turn_recorded(store, row)


def test_a_wait_ends_once_the_late_transcript_holds_the_turn(store, child, tmux_server):
    row, transcript = child
    prompt_event(store, row.id, "and goodbye")
    written = threading.Event()

    def late_write():
        time.sleep(0.6)
        write(transcript, [user("say hello"), assistant("ack: say hello"),
                           user("and goodbye"), assistant("ack: and goodbye")])  # fmt: skip
        written.set()

    writer = threading.Thread(target=late_write)
    writer.start()
    try:
        # the settle bound is generous here so a loaded machine's late writer is still waited for
        result = wait_mod.wait_for(
            store, tmux_server, [row], any_=True, timeout=120, poll=0.05, settle=120
        )
        assert written.is_set()  # it did not end on the Stop hook alone
    finally:
        writer.join()
    assert result.finished and result.states["a"].name == "idle"


def test_a_transcript_that_never_shows_the_turn_costs_the_settle_bound_only(
    store, child, tmux_server
):
    row, _ = child
    prompt_event(store, row.id, "interrupted before any answer")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    result = wait_mod.wait_for(
        store, tmux_server, [row], any_=True, timeout=60, poll=0.05, settle=0.3, sleep=sleep
    )
    assert result.finished and result.states["a"].name == "idle"
    assert slept  # it looked again for the turn before giving up at the bound
