"""`sandboxrun run --backend e2b` end to end: the CLI as a process, the emulator as E2B.

The same pipeline as the local backend, unchanged; the agent is the tests' stand-in
(tests/fake_claude.py) installed as `claude` on the sandbox's PATH, like the real template.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from e2blib import ENDS_WITHIN, STARTS_WITHIN, e2b_fixture, home, run, start
from sbr_testlib import branch_files, edge_error, git, logs_json, retry_until

pytestmark = pytest.mark.slow

SECRET = "sk-ant-api03-e2b-cli-test-secret-value"

e2b = e2b_fixture(SECRET)


def _snapshot_after_write(cli, name: str) -> bool:
    events = logs_json(cli, name)
    writes = [
        e["id"] for e in events if e["kind"] == "agent" and e["payload"].get("name") == "Write"
    ]
    snaps = [
        e["id"]
        for e in events
        if e["kind"] == "phase" and e["payload"].get("phase") == "checkpoint"
    ]
    return bool(writes and snaps and max(snaps) > min(writes))


def test_happy_path(cli, repo, e2b):
    """Commits and leftovers come back on the branch; the sandbox is torn down."""
    proc = run(
        cli,
        "happy",
        "@write src/new.py NEW = 2\n@commit agent: add new.py\n@append README.md more\n"
        "@binary blob.bin 2000\n@delete src/old.py",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "completed" in proc.stdout
    log = git(repo, "log", "--format=%s", "main..sandboxrun/happy").splitlines()
    assert log == ["sandboxrun: uncommitted changes left by the agent", "agent: add new.py"]
    files = branch_files(repo, "sandboxrun/happy")
    assert {"src/new.py", "blob.bin"} <= files and "src/old.py" not in files
    assert git(repo, "show", "sandboxrun/happy:README.md") == "# project\nmore\n"
    st = cli.status("happy")
    assert st["status"] == "completed" and st["backend"] == "e2b"
    assert st["sandbox_id"] and st["num_turns"] == 6  # 5 directives + the final text
    assert e2b.sandbox_ids() == []  # torn down
    assert e2b.stats["create"] == 1


def test_ignored_files_and_secrets_never_reach_the_sandbox(cli, repo, e2b):
    """What the agent sees in the sandbox: no .env, no ignored files."""
    proc = run(cli, "seen", "@bash find . -path ./.git -prune -o -type f -print | sort > seen.txt")
    assert proc.returncode == 0, proc.stderr
    seen = git(repo, "show", "sandboxrun/seen:seen.txt").split()
    assert "./src/app.py" in seen
    assert not any(".env" in s or s.endswith(".log") or "build/" in s for s in seen), seen


def test_dry_run_needs_no_agent_and_no_claude_key(cli, repo, e2b, monkeypatch):
    """--dry-run uploads, verifies and collects without Claude credentials or claude."""
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    e2b.set_claude(None)
    proc = run(cli, "dry", "x", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "files verified intact" in proc.stdout
    assert cli.status("dry")["status"] == "completed_no_changes"
    assert e2b.sandbox_ids() == []


def test_no_claude_credentials_fails_before_creating_anything(cli, repo, e2b, monkeypatch):
    """Neither ANTHROPIC_API_KEY nor CLAUDE_CODE_OAUTH_TOKEN: an error, no sandbox made."""
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    proc = run(cli, "nokey", "x")
    assert proc.returncode == 1
    assert "CLAUDE_CODE_OAUTH_TOKEN" in proc.stderr
    assert e2b.stats["create"] == 0


def test_kill_and_download_from_another_process(cli, repo, e2b):
    """download while running, then kill: the work so far is collected."""
    runp = start(cli, "victim", "@write made.txt made before kill\n@hang")
    try:
        retry_until(lambda: "Write" in cli("logs", "victim").stdout, timeout=STARTS_WITHIN)
        out_dir = repo.parent / "dl"
        proc = cli("download", "victim", "--output", str(out_dir))
        assert proc.returncode == 0, proc.stderr
        assert b"made.txt" in (out_dir / "changes.diff").read_bytes()
        proc = cli("kill", "victim")
        assert proc.returncode == 0, proc.stderr
        out, _ = runp.communicate(timeout=ENDS_WITHIN)
    finally:
        runp.kill()
    assert runp.returncode == 1 and "killed" in out, out + _
    assert cli.status("victim")["status"] == "killed"
    assert "made.txt" in branch_files(repo, "sandboxrun/victim")
    assert e2b.sandbox_ids() == []


def test_sigkill_the_run_process_then_attach(cli, repo, e2b):
    """The agent outlives the `run` process; `attach` follows it to the end and collects."""
    runp = start(
        cli,
        "crash",
        # The agent waits for a file in its sandbox: it is mid-run for as long as we need.
        "@write first.txt one\n@bash while [ ! -e /home/user/go ]; do sleep 0.05; done\n"
        "@write second.txt two",
    )
    retry_until(lambda: "Write" in cli("logs", "crash").stdout, timeout=STARTS_WITHIN)
    runp.send_signal(signal.SIGKILL)
    runp.wait(timeout=10)
    st = cli.status("crash")
    assert st["status"] == "running" and not st["driver_alive"]
    e2b.host_path(st["sandbox_id"], "/home/user/go").touch()
    proc = cli("attach", "crash", timeout=ENDS_WITHIN)
    assert proc.returncode == 0, proc.stderr
    assert {"first.txt", "second.txt"} <= branch_files(repo, "sandboxrun/crash")
    st = cli.status("crash")
    assert st["status"] == "completed" and st["num_turns"] >= 3
    assert e2b.sandbox_ids() == []


def test_expired_sandbox_applies_its_last_checkpoint(cli, repo, e2b):
    """E2B ending the sandbox mid-run: the last checkpoint of the work lands on the branch."""
    # Checkpoints are taken at each warning mark and every second: one comes after the agent
    # wrote the file however late it gets to it (the marks alone run out on a loaded machine).
    runp = start(cli, "doomed", "@write kept.txt before the end\n@hang",
                 "--warn-at", "1s,2s,3s,4s,6s,8s,12s", env={"SANDBOXRUN_CHECKPOINT_EVERY": "1s"})  # fmt: skip
    try:
        retry_until(lambda: _snapshot_after_write(cli, "doomed"), timeout=STARTS_WITHIN)
        sandbox_id = cli.status("doomed")["sandbox_id"]
        e2b.expire(sandbox_id)
        out, err = runp.communicate(timeout=ENDS_WITHIN)
    finally:
        runp.kill()
    assert runp.returncode == 1
    st = cli.status("doomed")
    # `lost` says what happened to the sandbox; the work up to the last checkpoint is applied.
    assert st["status"] == "lost", (out, err)
    assert "gone" in st["error"] and "checkpoint" in st["error"] and "applied" in st["error"]
    assert "kept.txt" in branch_files(repo, "sandboxrun/doomed")


def test_wrong_api_key(cli, repo, e2b, monkeypatch):
    """A rejected E2B key: exit 1, a message naming E2B_API_KEY, the key never printed."""
    monkeypatch.setenv("E2B_API_KEY", "e2b_wrong_but_secret_key_77")
    proc = run(cli, "badkey", "x")
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert "E2B rejected the API key (E2B_API_KEY)" in message and hint
    assert "e2b_wrong_but_secret_key_77" not in proc.stderr + proc.stdout
    assert cli.status("badkey")["status"] == "failed"


def test_missing_claude_in_the_template(cli, repo, e2b):
    """No `claude` in the sandbox: a clear error pointing at the template build."""
    e2b.set_claude(None)
    proc = run(cli, "noclaude", "x")
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert "not installed in the sandbox" in message
    assert "sandboxrun template build" in hint
    assert cli.status("noclaude")["status"] == "failed"
    assert e2b.sandbox_ids() == []


def test_five_concurrent_runs(cli, repo, e2b):
    """Five runs at once, five sandboxes, five branches that each hold only their own work."""
    procs = [start(cli, f"par{i}", f"@write out{i}.txt run {i}\n@sleep 1") for i in range(5)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    for i in range(5):
        files = branch_files(repo, f"sandboxrun/par{i}")
        assert f"out{i}.txt" in files
        assert not any(f"out{j}.txt" in files for j in range(5) if j != i)
    assert e2b.stats["create"] == 5
    assert e2b.sandbox_ids() == []


def test_secrets_never_stored_logged_or_collected(cli, repo, e2b):
    """Neither the Claude key nor the E2B key ends up in the db, logs, output or artifacts."""
    e2b_key = os.environ["E2B_API_KEY"]
    proc = run(
        cli,
        "sec",
        "@write a.txt a\n@bash printenv | grep -c ANTHROPIC_API_KEY > count.txt",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    # the agent did get the key (in its environment) ...
    assert git(repo, "show", "sandboxrun/sec:count.txt").strip() == "1"
    # ... but it is nowhere on our side
    logs = cli("logs", "sec", "--json")
    texts = [proc.stdout, proc.stderr, logs.stdout, logs.stderr, cli("status", "sec").stdout]
    blobs = [p.read_bytes() for p in home().rglob("*") if p.is_file()]
    for secret in (SECRET, e2b_key):
        assert not any(secret in t for t in texts)
        assert not any(secret.encode() in b for b in blobs)
    events = [json.loads(line) for line in logs.stdout.splitlines() if line.strip()]
    assert events


def test_template_build_help_and_dockerfile(cli):
    """`template build --help` documents the command; --dockerfile shows the definition."""
    from sandboxrun.cli import e2b_cmd
    from sandboxrun.sandbox.backends.e2b import CLAUDE_CODE_VERSION

    assert e2b_cmd.CLAUDE_CODE_VERSION == CLAUDE_CODE_VERSION
    proc = cli("template", "build", "--help")
    assert proc.returncode == 0
    assert "--name" in proc.stdout and "sandboxrun-claude" in proc.stdout
    assert CLAUDE_CODE_VERSION in proc.stdout
    proc = cli("template", "build", "--dockerfile")
    assert proc.returncode == 0
    assert f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}" in proc.stdout


def test_template_build_without_key(cli, monkeypatch):
    """Building needs E2B_API_KEY, and says so."""
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    proc = cli("template", "build")
    assert proc.returncode == 1
    message, hint = edge_error(proc.stderr)
    assert "E2B_API_KEY" in f"{message} {hint}"


def test_run_uses_no_subprocess_shell_quoting_tricks(cli, repo, e2b):
    """A prompt full of shell syntax reaches the agent verbatim (argv and files, not shells)."""
    prompt = "@write q.txt $(id) `id` ; | & > '\" $HOME\n"
    proc = run(cli, "quote", prompt)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "show", "sandboxrun/quote:q.txt") == "$(id) `id` ; | & > '\" $HOME\n"


def test_cleanup_and_status_after_run(cli, repo, e2b):
    """status shows the e2b backend and sandbox; nothing is left running afterwards."""
    assert run(cli, "st", "x").returncode == 0
    st = cli.status("st")
    assert st["backend"] == "e2b" and st["sandbox_id"]
    assert "e2b" in cli("status", "st").stdout
    # The agent ran in the sandbox, so it ended with it: no sandbox is left, and cleanup
    # finds nothing to remove (kept with --keep it would).
    assert e2b.sandbox_ids() == []
    assert cli.json("cleanup")["sandboxes_removed"] == []
    assert run(cli, "kept", "x", "--keep").returncode == 0
    kept = cli.status("kept")["sandbox_id"]
    assert e2b.sandbox_ids() == [kept]
    assert cli.json("cleanup")["sandboxes_removed"] == ["kept"]
    assert e2b.sandbox_ids() == []
