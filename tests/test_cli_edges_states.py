"""Every session command in every session state: one table (``sandbox.nextstep.refusal``)
decides whether a command works; a refusal is an error (exit 1, never 2: the command was
called right) whose hint names only commands that work in that state. The table is checked
exhaustively, then through the real CLI on real sessions (local backend, real SQLite)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from sbr_testlib import GATE_WAIT, edge_error, open_gate, retry_until

from sandboxrun.sandbox.nextstep import (
    SESSION_COMMANDS,
    SessionFacts,
    next_commands,
    refusal,
)
from sandboxrun.store import ACTIVE, TERMINAL, SessionStore, Status

STATUSES = sorted(str(s) for s in Status)
FLAGS = ("driver_alive", "agent_started", "has_commits", "has_patches", "stopping", "collected")


def every_facts():
    """Every combination of status and facts a session can be seen with."""
    for status in STATUSES:
        for values in itertools.product((False, True), repeat=len(FLAGS)):
            kw = dict(zip(FLAGS, values, strict=True))
            if kw["collected"] and not kw["has_patches"]:
                continue  # a collection is saved work
            for pending in (False, True) if status == "lost" and kw["has_patches"] else (False,):
                yield SessionFacts(name="s1", status=status, branch="sandboxrun/s1", repo="/r",
                                   checkpoint_pending=pending, **kw)  # fmt: skip
        # a local-mode child (tmux) in the same table
        yield SessionFacts(name="s1", status=status, driver_alive=False, agent_started=False,
                           has_commits=False, has_patches=False, mode="local")  # fmt: skip


#: what acts on a local-mode child (local_cmd), named by the table for those
LOCAL_COMMANDS = {"read", "open", "close"}


ALL_FACTS = list(every_facts())


def verbs(text: str) -> list[str]:
    """The sandboxrun commands a hint or list names (``sandboxrun VERB ...``)."""
    return re.findall(r"sandboxrun (\w+)", text)


def test_the_table_covers_every_status():
    assert {f.status for f in ALL_FACTS} == set(STATUSES) == {str(s) for s in ACTIVE | TERMINAL}
    assert len(ALL_FACTS) > 500


@pytest.mark.parametrize("facts", ALL_FACTS, ids=lambda f: f.status)
def test_every_command_named_next_works_and_every_refusal_names_only_what_works(facts):
    for command in next_commands(facts):
        for verb in verbs(command):
            if facts.mode == "local":
                assert verb in LOCAL_COMMANDS | {"logs"}, command
            else:
                assert refusal(verb, facts) is None, (verb, facts)
    for command in SESSION_COMMANDS:
        refused = refusal(command, facts)
        if refused is None:
            continue
        assert refused.exit_code == 1  # a state, not a usage error
        assert refused.message.startswith(f"cannot {command} session s1: ")
        assert refused.hint.startswith("Next: `")
        named = verbs(refused.hint)
        assert named and command not in named, refused
        assert all(v in LOCAL_COMMANDS or refusal(v, facts) is None for v in named), refused
        if facts.mode == "local":
            assert "it is a local-mode child (in tmux), not a sandbox run" in refused.message


@pytest.mark.parametrize("status", sorted(str(s) for s in TERMINAL))
def test_an_ended_session_refuses_kill_extend_and_attach(status):
    for facts in (f for f in ALL_FACTS if f.status == status and f.mode == "sandbox"):
        assert refusal("kill", facts) is not None
        assert refusal("extend", facts) is not None
        assert (refusal("attach", facts) is None) == facts.checkpoint_pending
        assert refusal("status", facts) is None and refusal("logs", facts) is None
        assert (refusal("apply", facts) is None) == facts.collected
        assert (refusal("download", facts) is None) == facts.has_patches
        assert f"already ended ({status})" in refusal("kill", facts).message


@pytest.mark.parametrize("status", sorted(str(s) for s in ACTIVE))
def test_an_active_session_is_never_applied_and_extended_only_while_its_agent_runs(status):
    for facts in (f for f in ALL_FACTS if f.status == status and f.mode == "sandbox"):
        assert refusal("kill", facts) is None
        assert "has not ended yet" in refusal("apply", facts).message
        extendable = status == "running" and not facts.stopping
        assert (refusal("extend", facts) is None) == extendable
        # the limit starts with the agent: an extend before it would be overwritten then
        if status in ("created", "preparing", "packing", "provisioning"):
            assert "has not started yet" in refusal("extend", facts).message


def test_unknown_commands_are_a_programming_error():
    with pytest.raises(ValueError, match="unknown session command"):
        refusal("frobnicate", ALL_FACTS[0])


# -- through the CLI, on real sessions ---------------------------------------------------------


def _set_status(name: str, status: str) -> None:
    import os
    from pathlib import Path

    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    try:
        store.update(store.resolve(name).id, status=status)
    finally:
        store.close()


@pytest.mark.parametrize(
    "status",
    [  # one state in the quick suite, every one in the slow (each ~12 s of processes)
        pytest.param(s, marks=() if s == "failed" else pytest.mark.slow)
        for s in sorted(str(s) for s in TERMINAL)
    ],
)
def test_commands_on_an_ended_session_exit_1_with_a_hint_that_works(cli, status):
    """kill, extend, attach (and apply when nothing is collected) on an ended run: exit 1,
    ``Error:`` + ``Hint:``, the same as JSON under --json; each command the hint names then
    works (exit 0)."""
    assert (
        cli("run", "--backend", "local", "--dry-run", "--prompt", "x", "--name", "e1").returncode
        == 0
    )
    _set_status("e1", status)
    for args in (["kill", "e1"], ["extend", "e1", "10m"], ["attach", "e1"]):
        proc = cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        message, hint = edge_error(proc.stderr)
        assert f"cannot {args[0]} session e1: it already ended ({status})" == message
        assert hint and hint.startswith("Next: ")
        as_json = cli(*args, "--json")
        data = json.loads(as_json.stdout)
        assert as_json.returncode == 1 and data == {"error": message, "hint": hint, "exit_code": 1}
        for named in re.findall(r"`(sandboxrun [^`]+)`", hint):
            argv = named.split()[1:]
            if argv[0] == "download":
                argv += ["-o", str(cli.cwd.parent / f"dl-{status}")]
            done = cli(*argv)
            assert done.returncode == 0, (named, done.stderr)


def test_commands_on_a_running_session(cli, repo):
    """While the agent runs and its driver follows it: extend and download work; attach and
    apply say why not (exit 1) and name what works, which does; before the agent runs, extend
    is refused (the limit starts with the agent and would overwrite it)."""
    cli.popen("run", "--backend", "local", "--name", "live", "--timeout", "10m",
              "--warn-at", "5m", "--prompt", f"@write a.txt a\n{GATE_WAIT}")  # fmt: skip
    retry_until(lambda: (st := cli.status_or_none("live")) and st["status"] == "running", 60)
    for args, why in (
        (["attach", "live"], "another sandboxrun process still follows it"),
        (["apply", "live"], "it has not ended yet (running)"),
    ):
        proc = cli(*args)
        assert proc.returncode == 1, proc.stderr
        message, hint = edge_error(proc.stderr)
        assert message.startswith(f"cannot {args[0]} session live: {why}")
        assert "`sandboxrun logs live --follow`" in hint and "`sandboxrun kill live`" in hint
    assert cli("extend", "live", "1m").returncode == 0
    assert cli("download", "live", "-o", str(repo.parent / "dl")).returncode == 0
    open_gate("live")
    retry_until(lambda: cli.status("live")["status"] == "completed", 60)
    again = cli("kill", "live")
    assert again.returncode == 1 and "already ended (completed)" in again.stderr


def test_download_of_a_session_with_no_work_makes_nothing(cli, repo):
    """A run that failed before any work was saved: download refuses before it makes the
    output directory."""
    assert (
        cli("run", "--backend", "local", "--dry-run", "--prompt", "x", "--name", "f1").returncode
        == 0
    )
    import os
    import shutil
    from pathlib import Path

    home = Path(os.environ["SANDBOXRUN_HOME"])
    shutil.rmtree(home / "artifacts" / cli.status("f1")["id"])
    _set_status("f1", "failed")
    out = repo.parent / "never-made"
    proc = cli("download", "f1", "-o", str(out))
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert "no work has been collected from it" in message
    assert hint == "Next: `sandboxrun logs f1`."
    assert not out.exists()
    applied = cli("apply", "f1")
    assert applied.returncode == 1
    assert "there is no collected work of it to apply" in edge_error(applied.stderr)[0]


def test_sandbox_commands_on_a_local_mode_child_name_the_local_commands(cli, repo):
    """kill/attach/... of a tmux child said "unknown backend 'tmux'" (exit 2) or marked it
    killed without closing it; now each refuses (exit 1) and names read/open/close."""
    import os
    from pathlib import Path

    store = SessionStore(Path(os.environ["SANDBOXRUN_HOME"]) / "state.db")
    try:
        store.create_session(name="child1", mode="local", backend="tmux", status=Status.RUNNING,
                             repo=str(repo), worktree=str(repo / ".worktrees" / "child1"),
                             branch="agent/child1/active", base_ref="main", base_commit="x",
                             prompt="p")  # fmt: skip
    finally:
        store.close()
    for args in (["kill", "child1"], ["attach", "child1"], ["extend", "child1", "5m"],
                 ["download", "child1"], ["apply", "child1"]):  # fmt: skip
        proc = cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        message, hint = edge_error(proc.stderr)
        assert message.endswith("it is a local-mode child (in tmux), not a sandbox run")
        assert hint == ("Next: `sandboxrun read child1`, or `sandboxrun open child1`, or "
                        "`sandboxrun close child1`.")  # fmt: skip
    assert cli.status("child1")["status"] == "running"  # nothing was changed
