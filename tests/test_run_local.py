"""`sandboxrun run` end to end on the local backend, through the CLI as a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from sbr_testlib import (
    GATE_WAIT,
    branch_files,
    edge_error,
    git,
    open_gate,
    retry_until,
    sandbox_home,
)

pytestmark = pytest.mark.slow


def test_happy_path_brings_back_commits_and_leftovers(cli, repo):
    """Edits, adds, deletes, renames, binary files and agent commits come back on the branch."""
    plan = repo / "PLAN.md"
    plan.write_text(
        "Do the work.\n"
        "@write src/new.py NEW = 2\n"
        "@append README.md more text\n"
        "@commit agent: add new.py and extend README\n"
        "@delete src/old.py\n"
        "@rename src/app.py src/main.py\n"
        "@binary assets/blob.bin 3000\n"
        "@chmod src/new.py 755\n"
    )
    git(repo, "add", "PLAN.md")
    git(repo, "commit", "-q", "-m", "plan")
    proc = cli("run", "--backend", "local", "--prompt-file", "PLAN.md", "--name", "happy")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "completed" in proc.stdout
    assert "sandboxrun/happy" in proc.stdout
    assert "git -C" in proc.stdout and "merge sandboxrun/happy" in proc.stdout

    log = git(repo, "log", "--format=%s", "main..sandboxrun/happy").splitlines()
    assert log == [
        "sandboxrun: uncommitted changes left by the agent",
        "agent: add new.py and extend README",
    ]
    files = branch_files(repo, "sandboxrun/happy")
    assert {"src/new.py", "src/main.py", "assets/blob.bin", "PLAN.md"} <= files
    assert "src/old.py" not in files and "src/app.py" not in files
    assert git(repo, "show", "sandboxrun/happy:README.md") == "# project\nmore text\n"
    blob = subprocess.run(
        ["git", "-C", str(repo), "show", "sandboxrun/happy:assets/blob.bin"],
        capture_output=True,
        check=True,
    ).stdout
    assert len(blob) == 3003 and b"\0" in blob
    mode = git(repo, "ls-tree", "sandboxrun/happy", "src/new.py").split()[0]
    assert mode == "100755"
    # The worktree has the work checked out and is clean; the main checkout is untouched.
    wt = repo / ".worktrees" / "happy"
    assert (wt / "src" / "new.py").read_text() == "NEW = 2\n"
    assert git(wt, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert ".worktrees/" not in (repo / ".gitignore").read_text()
    assert "/.worktrees/" in (repo / ".git" / "info" / "exclude").read_text()

    st = cli.status("happy")
    assert st["status"] == "completed"
    assert st["mode"] == "sandbox" and st["backend"] == "local"
    assert st["branch"] == "sandboxrun/happy"
    assert st["num_turns"] == 8 and st["cost_usd"] > 0
    assert len(st["result_commits"]) == 2 and st["files_changed"] == 5
    assert st["agent_session_id"]
    # Patches are kept as artifacts.
    artifacts = Path(os.environ["SANDBOXRUN_HOME"]) / "artifacts" / st["id"]
    assert (artifacts / "collect.out").read_text().startswith("mode=history")
    assert (artifacts / "objects" / "pack" / "work.pack").stat().st_size > 0
    # The sandbox is torn down.
    assert not (Path(os.environ["SANDBOXRUN_HOME"]) / "sandboxes" / st["id"]).exists()


def test_ignored_files_and_secrets_never_reach_the_sandbox(cli, repo):
    """The agent lists what it sees: no .env, no ignored files."""
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "seen",
        "--prompt",
        "@bash find . -path ./.git -prune -o -type f -print | sort > seen.txt",
    )
    assert proc.returncode == 0, proc.stderr
    seen = git(repo, "show", "sandboxrun/seen:seen.txt").split()
    assert "./src/app.py" in seen and "./README.md" in seen
    assert not any("server.pem" in s for s in seen), seen
    assert "deploy/server.pem" in proc.stderr  # the user is told what was kept out
    home = Path(os.environ["SANDBOXRUN_HOME"])
    # Anywhere under our home: the database, its write-ahead log, the artifacts.
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in stored)
    assert not [p for p in stored if b"supersecret-pem" in p.read_bytes()]
    # The agent never saw it, so the branch still has it unchanged (nothing deleted).
    assert "deploy/server.pem" in branch_files(repo, "sandboxrun/seen")


def test_commit_message_with_from_line_survives(cli, repo):
    """A message line starting with "From " (an mbox separator) comes back unchanged."""
    plan = (
        "@write a.txt a\n"
        "@bash git add -A && printf 'subject line\\n\\nFrom 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\\n' "
        "| git commit -q -F -"
    )
    proc = cli("run", "--backend", "local", "--name", "fromline", "--prompt", plan)
    assert proc.returncode == 0, proc.stderr
    body = git(repo, "log", "-1", "--format=%B", "sandboxrun/fromline")
    assert (
        body.strip()
        == "subject line\n\nFrom 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001"
    )


def test_no_changes(cli, repo):
    proc = cli("run", "--backend", "local", "--name", "idle", "--prompt", "just look around")
    assert proc.returncode == 0, proc.stderr
    # The fixture's checkout has only an untracked .env, a secret that is never uploaded
    # anyway (deny-list): nothing worth a warning is left out.
    assert "uncommitted changes" not in proc.stderr
    st = cli.status("idle")
    assert st["status"] == "completed_no_changes"
    assert st["result_commits"] == []
    assert git(repo, "rev-parse", "sandboxrun/idle") == git(repo, "rev-parse", "main")
    # A real uncommitted change is left out, and the user is told.
    (repo / "README.md").write_text("# changed\n")
    proc = cli("run", "--backend", "local", "--name", "idle2", "--prompt", "look again")
    assert proc.returncode == 0, proc.stderr
    assert "uncommitted changes" in proc.stderr and "--with-changes" in proc.stderr


def test_agent_failure_is_reported_with_reason(cli, repo):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "boom",
        "--prompt",
        "@write partial.txt half done\n@fail 3",
    )
    assert proc.returncode == 1
    st = cli.status("boom")
    assert st["status"] == "failed"
    assert "code 3" in st["error"] and "failing on request" in st["error"]
    # Work so far is still collected.
    assert "partial.txt" in branch_files(repo, "sandboxrun/boom")

    proc = cli("run", "--backend", "local", "--name", "boom2", "--prompt", "@error API Error: 500")
    assert proc.returncode == 1
    assert "API Error: 500" in cli.status("boom2")["error"]


def test_refused_paths_are_kept_apart_and_the_rest_applied(cli, repo):
    """A sensitive file no longer throws the rest away: it is kept as its own patch and
    `sandboxrun apply --allow-sensitive` lands it later without rerunning the agent."""
    plan = (
        "@write .claude/settings.json {}\n@write ok.txt fine\n@commit agent: both\n"
        "@write .sandboxrun.toml backend = 'local'\n@write later.txt leftover"
    )
    proc = cli("run", "--backend", "local", "--name", "sneaky", "--prompt", plan)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert ".claude/settings.json" in out and ".sandboxrun.toml" in out
    assert "sandboxrun apply sneaky --allow-sensitive" in out
    assert "rerun with" not in out
    st = cli.status("sneaky")
    assert st["status"] == "completed_with_refusals"
    files = branch_files(repo, "sandboxrun/sneaky")
    assert {"ok.txt", "later.txt"} <= files
    assert ".claude/settings.json" not in files and ".sandboxrun.toml" not in files
    log = git(repo, "log", "--format=%s", "main..sandboxrun/sneaky").splitlines()
    assert log == ["sandboxrun: uncommitted changes left by the agent", "agent: both"]
    artifacts = Path(os.environ["SANDBOXRUN_HOME"]) / "artifacts" / st["id"]
    kept = (artifacts / "refused.diff").read_text()
    assert ".claude/settings.json" in kept and ".sandboxrun.toml" in kept and "ok.txt" not in kept

    proc = cli("apply", "sneaky")
    assert proc.returncode == 1 and "--allow-sensitive" in proc.stdout
    proc = cli("apply", "sneaky", "--allow-sensitive")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = branch_files(repo, "sandboxrun/sneaky")
    assert {".claude/settings.json", ".sandboxrun.toml", "ok.txt"} <= files
    st = cli.status("sneaky")
    assert st["status"] == "completed" and len(st["result_commits"]) == 3
    wt = repo / ".worktrees" / "sneaky"
    assert git(wt, "status", "--porcelain") == ""
    assert cli("apply", "sneaky").stdout.startswith("Nothing left to apply")

    proc = cli(
        "run", "--backend", "local", "--name", "allowed", "--allow-sensitive", "--prompt", plan
    )
    assert proc.returncode == 0, proc.stderr
    assert ".claude/settings.json" in branch_files(repo, "sandboxrun/allowed")


def test_symlink_escaping_the_tree_is_refused(cli, repo):
    proc = cli(
        "run", "--backend", "local", "--name", "link", "--prompt", "@symlink evil /etc/passwd"
    )
    assert proc.returncode == 1
    assert "evil" in proc.stderr


def test_timeout_warns_stops_and_collects(cli, repo):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "slow",
        "--timeout",
        "15s",  # a window for the agent to write early.txt on a loaded machine
        "--warn-at",
        "1s,2s",
        "--prompt",
        "@write early.txt before the limit\n@hang",
    )
    assert proc.returncode == 1
    st = cli.status("slow")
    assert st["status"] == "timeout"
    assert "early.txt" in branch_files(repo, "sandboxrun/slow")
    events = [json.loads(line) for line in cli("logs", "slow", "--json").stdout.splitlines()]
    warnings = [e for e in events if e["kind"] == "warning"]
    assert [w["payload"]["mark"] for w in warnings] == [1.0, 2.0, "limit"]
    assert "left before the time limit" in warnings[0]["payload"]["message"]


def test_kill_from_another_process_collects_work(cli, repo):
    run = cli.popen(
        "run",
        "--backend",
        "local",
        "--name",
        "victim",
        "--prompt",
        "@write made.txt made before kill\n@hang",
    )
    try:
        retry_until(lambda: "Write" in cli("logs", "victim").stdout, timeout=120)
        proc = cli("kill", "victim")
        assert proc.returncode == 0, proc.stderr
        assert "killed" in proc.stdout
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 1
    assert "killed" in out
    st = cli.status("victim")
    assert st["status"] == "killed"
    assert "made.txt" in branch_files(repo, "sandboxrun/victim")


def test_kill_discard_keeps_nothing(cli, repo):
    run = cli.popen(
        "run",
        "--backend",
        "local",
        "--name",
        "discard",
        "--prompt",
        "@write thrown.txt away\n@hang",
    )
    try:
        retry_until(lambda: "Write" in cli("logs", "discard").stdout, timeout=120)
        assert cli("kill", "discard", "--discard").returncode == 0
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert cli.status("discard")["status"] == "killed"
    assert "thrown.txt" not in branch_files(repo, "sandboxrun/discard")


def test_concurrent_runs_in_one_repo(cli, repo):
    procs = [
        cli.popen(
            "run",
            "--backend",
            "local",
            "--name",
            f"par{i}",
            "--prompt",
            f"@write out{i}.txt run {i}",
        )
        for i in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for i in range(4):
        files = branch_files(repo, f"sandboxrun/par{i}")
        assert f"out{i}.txt" in files
        assert not any(f"out{j}.txt" in files for j in range(4) if j != i)
    assert len(git(repo, "worktree", "list").splitlines()) == 5


def test_detach_and_follow_logs_from_another_terminal(cli, repo):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "bg",
        "--detach",
        "--prompt",
        "@sleep 1\n@write bg.txt background",
    )
    assert proc.returncode == 0, proc.stderr
    assert "sandboxrun logs bg --follow" in proc.stdout
    follow = cli("logs", "bg", "--follow", timeout=60)
    assert follow.returncode == 0
    assert "Write" in follow.stdout
    assert "completed" in follow.stdout
    assert cli.status("bg")["status"] == "completed"
    assert "bg.txt" in branch_files(repo, "sandboxrun/bg")
    raw = cli("logs", "bg", "--raw").stdout.splitlines()
    assert json.loads(raw[0])["type"] == "system"


def test_download_while_running_then_attach_after_sigkill(cli, repo):
    """SIGKILL the `run` process: the agent goes on; download and attach recover the work."""
    # The agent waits at a gate: it is mid-run for as long as we need.
    run = cli.popen(
        "run",
        "--backend",
        "local",
        "--name",
        "crash",
        "--prompt",
        f"@write first.txt one\n{GATE_WAIT}\n@write second.txt two",
    )
    retry_until(lambda: "Write" in cli("logs", "crash").stdout, timeout=120)
    out_dir = repo.parent / "dl"
    proc = cli("download", "crash", "--output", str(out_dir))
    assert proc.returncode == 0, proc.stderr
    assert b"first.txt" in (out_dir / "changes.diff").read_bytes()
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    st = cli.status("crash")
    assert st["status"] == "running" and not st["driver_alive"]
    assert "attach" in cli("status", "crash").stdout
    open_gate("crash")
    proc = cli("attach", "crash", timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = branch_files(repo, "sandboxrun/crash")
    assert {"first.txt", "second.txt"} <= files
    st = cli.status("crash")
    assert st["status"] == "completed" and st["num_turns"] == 4


def test_with_changes_starts_from_the_working_tree(cli, repo):
    (repo / "README.md").write_text("# project\nlocal edit\n")
    (repo / "notes.txt").write_text("untracked but wanted\n")
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "wc",
        "--with-changes",
        "--prompt",
        "@bash cat README.md notes.txt > combined.txt; ls -a > listing.txt",
    )
    assert proc.returncode == 0, proc.stderr
    log = git(repo, "log", "--format=%s", "main..sandboxrun/wc").splitlines()
    assert log[-1] == "sandboxrun: uncommitted changes carried from the main checkout"
    combined = git(repo, "show", "sandboxrun/wc:combined.txt")
    assert "local edit" in combined and "untracked but wanted" in combined
    # The user's checkout is untouched, and the secret was not carried (.env is untracked).
    assert git(repo, "status", "--porcelain").strip() != ""
    files = branch_files(repo, "sandboxrun/wc")
    assert ".env" not in files and "debug.log" not in files
    listing = git(repo, "show", "sandboxrun/wc:listing.txt").split()
    assert ".env" not in listing and "debug.log" not in listing and "build" not in listing
    assert ".env" in proc.stderr  # told it was not carried


def test_dry_run_needs_no_agent(cli, repo, monkeypatch):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--dry-run",
        "--name",
        "dry",
        "--prompt",
        "x",
        env={"SANDBOXRUN_CLAUDE_BIN": "/nonexistent/claude"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "files verified intact" in proc.stdout
    for phase in ("pack", "create", "upload", "verify", "collect"):
        assert phase in proc.stdout
    assert cli.status("dry")["status"] == "completed_no_changes"


def test_usage_limit_is_recorded_as_waiting_quota(cli, repo):
    reset = int(time.time()) + 3600
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "quota",
        "--prompt",
        f"@write w.txt work\n@ratelimit {reset}",
        env={"SANDBOXRUN_QUOTA_STALL": "1s"},
    )
    assert proc.returncode == 1
    st = cli.status("quota")
    assert st["status"] == "waiting_quota"
    assert st["quota_resets_at"] == reset
    assert "w.txt" in branch_files(repo, "sandboxrun/quota")
    # The run is over: it has an end time, and cleanup does not take it for an orphan.
    assert st["ended_at"] is not None
    assert "quota" not in cli.json("cleanup", "--dry-run")["orphans"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prompt-file", "missing.md"], 2, "prompt file missing.md does not exist"),
        (["--prompt", "x", "--repo", "/"], 1, "is not inside a git repository"),
        (["--prompt", "x", "--timeout", "soon"], 2, "invalid value for 'timeout' in --timeout"),
        (["--prompt", "x"], 2, "E2B_API_KEY"),
        (["--prompt", "x", "--backend", "nope"], 2, "unknown backend"),
        (["--prompt", "x", "--bogus"], 2, "No such option"),
        (["--prompt", "x", "--backend", "local", "--name", "bad name"], 2, "invalid session name"),
    ],
)
def test_bad_input_gives_clear_error_and_leaves_nothing(cli, repo, args, code, message):
    before_branches = git(repo, "branch", "--list")
    proc = cli("run", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert git(repo, "branch", "--list") == before_branches
    assert not (repo / ".worktrees").exists() or not any((repo / ".worktrees").iterdir())
    db = Path(os.environ["SANDBOXRUN_HOME"]) / "state.db"
    if db.exists():
        assert sqlite3.connect(db).execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_name_in_use_and_unknown_session(cli, repo):
    assert cli("run", "--backend", "local", "--name", "dup", "--prompt", "x").returncode == 0
    proc = cli("run", "--backend", "local", "--name", "dup", "--prompt", "x")
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert "already exists" in message and "--name" in hint
    for command in (
        ["status", "nosuch"],
        ["logs", "nosuch"],
        ["kill", "nosuch"],
        ["download", "nosuch"],
    ):
        proc = cli(*command)
        assert proc.returncode == 1
        assert "no session matches 'nosuch'" in edge_error(proc.stderr)[0]


def test_status_json_shape_and_prefix_resolution(cli, repo):
    assert cli("run", "--backend", "local", "--name", "shape", "--prompt", "x").returncode == 0
    data = cli.json("status")
    assert isinstance(data, list) and len(data) == 1
    for key in (
        "id",
        "name",
        "mode",
        "backend",
        "status",
        "branch",
        "worktree",
        "cost_usd",
        "num_turns",
    ):
        assert key in data[0]
    prefix = data[0]["id"][:4]
    assert cli.status(prefix)["name"] == "shape"


def test_not_in_the_main_checkout(cli, repo):
    assert cli("run", "--backend", "local", "--name", "first", "--prompt", "x").returncode == 0
    proc = cli("run", "--backend", "local", "--prompt", "x", cwd=repo / ".worktrees" / "first")
    assert proc.returncode == 2
    assert "main checkout" in proc.stderr


def test_extend_pushes_the_limit(cli, repo):
    """`extend` from another terminal moves the running session's deadline by exactly that."""
    # The agent waits at a gate: no race with the clock.
    run = cli.popen(
        "run", "--backend", "local", "--name", "ext", "--timeout", "10m", "--warn-at", "none",
        "--prompt", f"@write a.txt a\n{GATE_WAIT}\n@write done.txt finished",
    )  # fmt: skip
    before = retry_until(
        lambda: (st := cli.status_or_none("ext")) and st["status"] == "running" and st,
        timeout=60,
    )
    proc = cli("extend", "ext", "30s")
    assert proc.returncode == 0, proc.stderr
    assert "limit now" in proc.stdout
    after = cli.status("ext")
    assert after["deadline"] == pytest.approx(before["deadline"] + 30)
    assert after["timeout_s"] == pytest.approx(600 + 30)
    open_gate("ext")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    st = cli.status("ext")
    assert st["status"] == "completed"
    assert "done.txt" in branch_files(repo, "sandboxrun/ext")


def test_keep_then_cleanup_never_touches_branches_or_dirty_worktrees(cli, repo):
    home = Path(os.environ["SANDBOXRUN_HOME"])
    assert (
        cli(
            "run", "--backend", "local", "--name", "kept", "--keep", "--prompt", "@write k.txt k"
        ).returncode
        == 0
    )
    assert (
        cli("run", "--backend", "local", "--name", "dirty", "--prompt", "@write d.txt d").returncode
        == 0
    )
    kept = cli.status("kept")
    assert (home / "sandboxes" / kept["id"]).is_dir()
    (repo / ".worktrees" / "dirty" / "scratch.txt").write_text("user work in progress\n")

    dry = cli.json("cleanup", "--worktrees", "--dry-run")
    assert dry["sandboxes_removed"] == ["kept"]
    assert (home / "sandboxes" / kept["id"]).is_dir()

    report = cli.json("cleanup", "--worktrees")
    assert report["sandboxes_removed"] == ["kept"]
    assert not (home / "sandboxes" / kept["id"]).exists()
    assert str(repo / ".worktrees" / "kept") in report["worktrees_removed"]
    assert str(repo / ".worktrees" / "dirty") in report["kept_dirty"]
    assert (repo / ".worktrees" / "dirty" / "scratch.txt").exists()
    # Branches stay: the work is there to merge.
    assert "k.txt" in branch_files(repo, "sandboxrun/kept")
    assert "d.txt" in branch_files(repo, "sandboxrun/dirty")


def test_download_after_the_end_uses_saved_artifacts(cli, repo):
    assert (
        cli(
            "run",
            "--backend",
            "local",
            "--name",
            "fin",
            "--prompt",
            "@write f.txt f\n@commit add f",
        ).returncode
        == 0
    )
    out = repo.parent / "fin-out"
    data = cli.json("download", "fin", "--output", str(out))
    assert data["live"] is False
    assert "add f" in (out / "commits.txt").read_text()
    assert b"+++ b/f.txt" in (out / "changes.diff").read_bytes()
    assert (out / "agent.log").exists()
    # The printed git command works on a branch where the run started, commits or not.
    git(repo, "worktree", "add", "-q", "-b", "replay", str(repo.parent / "replay"), "main")
    command = next(c for c in data["commands"] if c.startswith("git "))
    command = command.replace(str(repo / ".worktrees" / "fin"), str(repo.parent / "replay"))
    assert subprocess.run(command, shell=True, check=False).returncode == 0
    assert (repo.parent / "replay" / "f.txt").read_text() == "f\n"


def test_ctrl_c_stops_and_collects_and_a_second_leaves_the_agent_running(cli, repo):
    run = cli.popen("run", "--backend", "local", "--name", "ctrlc", "--prompt",
                    "@write c.txt before ctrl-c\n@hang")  # fmt: skip
    try:
        retry_until(lambda: "Write" in cli("logs", "ctrlc").stdout, timeout=120)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 1
    assert "Ctrl-C: stopping the agent" in err
    st = cli.status("ctrlc")
    assert st["status"] == "killed"
    assert "c.txt" in branch_files(repo, "sandboxrun/ctrlc")

    # Relative to the agent's repository: its sandbox's home, which an isolated agent sees.
    run = cli.popen("run", "--backend", "local", "--name", "ctrlc2", "--prompt",
                    "@stopgate ../stop-now\n@write d.txt first\n@hang")  # fmt: skip
    try:
        retry_until(lambda: "Write" in cli("logs", "ctrlc2").stdout, timeout=120)
        # The agent does not stop until the gate exists; a second Ctrl-C meanwhile must leave
        # it running.
        run.send_signal(signal.SIGINT)
        retry_until(lambda: "Ctrl-C" in cli("logs", "ctrlc2").stdout, timeout=120)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130  # interrupted, the agent left running: not a failure
    st = cli.status("ctrlc2")
    assert "sandboxrun attach ctrlc2" in err
    assert st["status"] in ("running", "collecting") and not st["driver_alive"]
    (sandbox_home("ctrlc2") / "stop-now").touch()
    assert cli("kill", "ctrlc2").returncode == 0
    assert cli.status("ctrlc2")["status"] == "killed"
    assert "d.txt" in branch_files(repo, "sandboxrun/ctrlc2")
