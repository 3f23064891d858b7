"""What the CLI prints: never reads user or agent text as markup, commands that paste, JSON.

Through `python -m sandboxrun` as a real process; sessions in a given state are real rows in
the real state database (the pipeline that would put them there is tested elsewhere).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from sbr_testlib import CLI, git, git_project

import sandboxrun
from sandboxrun.config import load_settings
from sandboxrun.store import SessionStore


def add_session(repo: Path, name: str, **fields) -> str:
    """A real session row, as `run` would have left it in some state; returns its id."""
    store = SessionStore(load_settings().db_path)
    row = {
        "name": name,
        "mode": "sandbox",
        "backend": "local",
        "repo": str(repo),
        "worktree": str(repo / ".worktrees" / name),
        "branch": f"sandboxrun/{name}",
        "base_ref": "HEAD",
        "base_commit": git(repo, "rev-parse", "HEAD").strip(),
        "prompt": "do it",
        "timeout_s": 600.0,
        "options": {},
    }
    row.update(fields)
    s = store.create_session(**row)
    store.close()
    return s.id


@pytest.mark.parametrize(
    "status", ["created", "packing", "provisioning", "collecting", "running", "completed"]
)
def test_status_table_shows_a_session_in_every_state(cli, repo, status):
    """The table works in the first seconds of a run, not only once it is running."""
    add_session(repo, f"s-{status}", status=status)
    proc = cli("status")
    assert proc.returncode == 0, proc.stderr
    assert f"s-{status}" in proc.stdout and status in proc.stdout


BRACKETED = ["pages/[id]/.env", ".github/workflows/[ci].yml", "[wip]/plan.md", "[bold]x[/bold]"]


def test_user_and_agent_text_prints_literally(cli, repo):
    """Paths and messages with [brackets] print exactly, in every command that shows them."""
    error = "refused changes to " + ", ".join(BRACKETED)
    add_session(
        repo,
        "marked",
        status="failed",
        error=error,
        worktree="/tmp/[wip] tree/marked",
        ended_at=time.time(),
    )
    one = cli("status", "marked")
    assert one.returncode == 0, one.stderr
    assert error in one.stdout
    assert "/tmp/[wip] tree/marked" in one.stdout

    table = cli("status")
    assert table.returncode == 0 and "marked" in table.stdout

    # An error message from the core (a missing prompt file named by the user).
    missing = cli("run", "--backend", "local", "--prompt-file", "[wip]/plan.md")
    assert missing.returncode == 2
    assert "Error: prompt file [wip]/plan.md does not exist" in missing.stderr

    # A report naming what a forgotten session leaves behind.
    (repo / "[wip]").mkdir()
    sid = add_session(
        repo, "left", status="completed", worktree=str(repo / "[wip]"), ended_at=time.time()
    )
    artifacts = load_settings().session_artifacts(sid)
    artifacts.mkdir(parents=True)
    forget = cli("cleanup", "--forget")
    assert forget.returncode == 0, forget.stderr
    assert f"worktree {repo / '[wip]'}" in forget.stdout
    assert str(artifacts) in forget.stdout


@pytest.mark.slow
def test_warnings_with_brackets_print_literally(cli, repo):
    """The run's own warnings carry user paths too (changes not carried, sensitive files)."""
    (repo / "[wip]").mkdir()
    (repo / "[wip]" / "notes.md").write_text("draft\n")
    proc = cli("run", "--backend", "local", "--dry-run", "--name", "br", "--prompt", "x", "--keep")
    assert proc.returncode == 0, proc.stderr
    # untracked [wip]/ makes the tree dirty: the warning names the repo, literally
    assert f"uncommitted changes in {repo} are not included" in proc.stderr


@pytest.mark.slow
def test_review_and_merge_commands_paste_into_a_shell(tmp_path):
    """The printed commands work as printed for a repository whose path has spaces."""
    repo = git_project(tmp_path / "my project [v2]", {"README.md": "hi\n"})
    cli = CLI(repo)
    proc = cli(
        "run", "--backend", "local", "--name", "q", "--prompt", "@write a.txt A\n@commit add a"
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    commands = [
        line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("git -C")
    ]
    assert len(commands) == 3, proc.stdout
    env = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "T"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    for command in commands:
        run = subprocess.run(
            ["sh", "-c", command], capture_output=True, text=True, env={**cli.env(), **env}
        )
        assert run.returncode == 0, (command, run.stderr)
    assert (repo / "a.txt").read_text() == "A\n"  # the merge command merged


def test_version(cli):
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sandboxrun {sandboxrun.__version__}"


READ_COMMANDS = [
    ["run"],
    ["status"],
    ["logs"],
    ["kill"],
    ["download"],
    ["attach"],
    ["extend"],
    ["cleanup"],
    ["pack"],
    ["template", "build"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_offers_json(cli, command):
    proc = cli(*command, "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "--json" in proc.stdout


def test_extend_json(cli, repo):
    now = time.time()
    add_session(repo, "ext", status="running", started_at=now, deadline=now + 60)
    data = cli.json("extend", "ext", "5m")
    assert data["name"] == "ext"
    assert data["deadline"] == pytest.approx(now + 360)
    assert 300 < data["time_left_s"] <= 360


def test_status_json_has_isolation(cli, repo):
    add_session(repo, "iso", status="completed", ended_at=time.time())
    add_session(repo, "cloud", status="completed", backend="e2b", ended_at=time.time())
    data = {s["name"]: s for s in cli.json("status")}
    assert data["iso"]["isolated"] is False and data["cloud"]["isolated"] is True


def test_status_columns_align_for_short_names(cli, repo):
    """Every header starts where its column's values start, however short the names are."""
    add_session(repo, "a", status="completed", ended_at=time.time(), num_turns=3)
    add_session(repo, "bb", status="running", started_at=time.time(), deadline=time.time() + 90)
    lines = cli("status").stdout.splitlines()
    header, rows = lines[0], lines[1:]
    for col in ("NAME", "STATUS", "BRANCH", "BACKEND", "ISOLATED"):
        start = header.index(col)
        for row in rows:
            assert row[start] != " " and (start == 0 or row[start - 1] == " "), (col, lines)
    left_end = header.index("LEFT") + len("LEFT")
    assert re.match(r"\S", rows[1][left_end - 1])  # right-aligned time left
    assert "sandboxrun/bb" in rows[1]


def test_status_json_is_parseable_for_all(cli, repo):
    add_session(repo, "j1", status="created")
    data = json.loads(cli("status", "--json").stdout)
    assert [s["name"] for s in data] == ["j1"]


@pytest.mark.slow
def test_time_limit_message_says_when_and_why(cli, repo):
    """Stopped before the limit on purpose: the message says how long before, and why."""
    proc = cli(
        "run",
        "--backend",
        "local",
        "--name",
        "limit",
        "--timeout",
        "8s",
        "--prompt",
        "@write early.txt before the limit\n@sleep 60",
    )
    assert proc.returncode == 1
    st = cli.status("limit")
    assert st["status"] == "timeout"
    match = re.search(r"stopped after (\d+)s, (\d+)s before the 8s time limit", st["error"])
    assert match, st["error"]
    assert int(match.group(1)) + int(match.group(2)) == 8
    assert "to collect the work" in st["error"]
    assert "time limit reached (8s)" not in proc.stdout + proc.stderr
    assert st["error"] in proc.stdout  # the summary's reason line
