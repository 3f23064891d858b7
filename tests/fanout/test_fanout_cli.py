"""`sandboxrun fanout` end to end on the local backend with the stand-in agent, via the CLI."""

from __future__ import annotations

import json
import os
import signal

import pytest
from sbr_testlib import GATE_WAIT, branch_files, git, open_gate, retry_until

pytestmark = pytest.mark.slow


def tasks_file(repo, text, name="tasks.toml"):
    path = repo.parent / name
    path.write_text(text)
    return path


def report(cli, group):
    proc = cli("report", group, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_diamond_runs_in_order_from_merged_bases_and_integrates(cli, repo):
    """a and b run at once; c starts after both, from their merged work; integrate merges."""
    path = tasks_file(
        repo,
        """
[[task]]
name = "c"
prompt = "@bash cat a.txt b.txt > c.txt\\n@commit c"
depends_on = ["a", "b"]

[[task]]
name = "a"
prompt = "@write a.txt from-a\\n{gate}\\n@commit a"

[[task]]
name = "b"
prompt = "@write b.txt from-b\\n{gate}\\n@commit b"
""".replace("{gate}", GATE_WAIT),
    )
    fan = cli.popen(
        "fanout", str(path), "--backend", "local", "--name", "dia", "--max-parallel", "2"
    )
    # a and b both mid-run at once (each waits at its gate; a fixed sleep could end before a
    # loaded machine had started the other), then let them finish
    for task in ("dia-a", "dia-b"):
        retry_until(lambda task=task: "Write" in cli("logs", task).stdout)
    open_gate("dia-a")
    open_gate("dia-b")
    out, err = fan.communicate(timeout=600)
    assert fan.returncode == 0, err + out
    rep = report(cli, "dia")
    assert rep["status"] == "completed"
    rows = {r["task"]: r for r in rep["tasks"]}
    assert {r["status"] for r in rows.values()} == {"completed"}
    # dependency order: c started after both a and b ended
    assert rows["c"]["started_at"] >= max(rows["a"]["ended_at"], rows["b"]["ended_at"])
    # parallelism: a and b overlapped
    assert rows["a"]["started_at"] < rows["b"]["ended_at"]
    assert rows["b"]["started_at"] < rows["a"]["ended_at"]
    # c started from the merge of a and b
    assert git(repo, "show", "sandboxrun/dia-c:c.txt") == "from-a\nfrom-b\n"
    assert rep["critical_path"][-1] == "c" and len(rep["critical_path"]) == 2
    assert rep["sum_task_s"] == pytest.approx(sum(r["duration_s"] for r in rows.values()), abs=0.01)
    assert rep["wall_s"] > 0
    # the user's checkout is never touched
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    head = git(repo, "rev-parse", "HEAD")
    before = git(repo, "status", "--porcelain")

    proc = cli("integrate", "dia", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["branch"] == "sandboxrun/dia/integration" and not res["conflicts"]
    assert {"a.txt", "b.txt", "c.txt"} <= branch_files(repo, "sandboxrun/dia/integration")
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == before

    st = cli("status", "dia", "--json")
    assert st.returncode == 0 and json.loads(st.stdout)[0]["group"] == "dia"
    logs = cli("logs", "dia")
    assert logs.returncode == 0
    assert "[a]" in logs.stdout and "[c]" in logs.stdout and "[dia]" in logs.stdout
    html = cli("report", "dia", "--format", "html")
    assert html.stdout.startswith("<!doctype html>") and "<svg" in html.stdout


def test_conflicts_block_the_dependent_and_stop_integration(cli, repo):
    """Two tasks edit the same file: the dependent is blocked, integrate names the file."""
    path = tasks_file(
        repo,
        """
[[task]]
name = "x"
prompt = "@write README.md <b>from x</b>\\n@commit x"

[[task]]
name = "y"
prompt = "@write README.md from y\\n@commit y"

[[task]]
name = "z"
prompt = "@write z.txt z"
depends_on = ["x", "y"]
""",
    )
    proc = cli("fanout", str(path), "--backend", "local", "--name", "clash")
    assert proc.returncode == 1
    rows = {r["task"]: r for r in report(cli, "clash")["tasks"]}
    assert rows["z"]["status"] == "blocked" and "README.md" in rows["z"]["reason"]
    assert rows["x"]["status"] == rows["y"]["status"] == "completed"

    proc = cli("integrate", "clash")
    assert proc.returncode == 1
    assert "README.md" in proc.stderr and "sandboxrun/clash-y" in proc.stderr
    # left at the last clean merge: x's work
    assert git(repo, "show", "sandboxrun/clash/integration:README.md") == "<b>from x</b>\n"
    html = cli("report", "clash", "--format", "html").stdout
    assert "<b>from" not in html


def test_failed_dependency_skips_dependents(cli, repo):
    path = tasks_file(
        repo,
        """
[[task]]
name = "bad"
prompt = "@fail 3"

[[task]]
name = "after"
prompt = "@write after.txt x"
depends_on = ["bad"]

[[task]]
name = "other"
prompt = "@write other.txt x"
""",
    )
    proc = cli("fanout", str(path), "--backend", "local", "--name", "sk", "--json")
    assert proc.returncode == 1
    rows = {r["task"]: r for r in json.loads(proc.stdout)["tasks"]}
    assert rows["bad"]["status"] == "failed"
    assert rows["after"]["status"] == "skipped" and "bad" in rows["after"]["reason"]
    assert rows["other"]["status"] == "completed"


def test_budget_stops_new_tasks_and_stops_running_ones_with_work_collected(cli, repo):
    """Sandbox time is priced: the group reaches its budget while the task runs; the task is
    stopped at the hard limit, its committed work collected; the next task never starts."""
    path = tasks_file(
        repo,
        """
[[task]]
name = "long"
prompt = "@write long.txt done-so-far\\n@bash tr '\\\\0' ' ' < /proc/$PPID/cmdline > argv.txt\\n@commit partial\\n@sleep 120"

[[task]]
name = "next"
prompt = "@write next.txt x"
depends_on = ["long"]
""",
    )
    proc = cli(
        "fanout",
        str(path),
        "--backend",
        "local",
        "--name",
        "bud",
        "--budget-usd",
        "0.02",
        "--price-per-second",
        "0.01",
        "--hard-factor",
        "1.0",
    )
    assert proc.returncode == 1, proc.stderr
    rep = report(cli, "bud")
    rows = {r["task"]: r for r in rep["tasks"]}
    assert rep["status"] == "stopped"
    assert rows["long"]["status"] == "killed"
    assert "long.txt" in branch_files(repo, "sandboxrun/bud-long")
    # the group's budget reaches Claude Code as --max-budget-usd
    assert "--max-budget-usd 0.02 " in git(repo, "show", "sandboxrun/bud-long:argv.txt")
    assert rows["next"]["status"] == "skipped" and "budget" in rows["next"]["reason"]


def test_kill_group_and_attach_after_driver_sigkill(cli, repo):
    """SIGKILL the detached scheduler mid-run; `attach GROUP` resumes without starting any
    task twice; `kill GROUP` then stops what still runs, collecting its work."""
    path = tasks_file(
        repo,
        """
[[task]]
name = "one"
prompt = "@write one.txt 1\\n@commit one\\n@sleep 2"

[[task]]
name = "two"
prompt = "@write two.txt 2\\n@commit two"
depends_on = ["one"]

[[task]]
name = "slow"
prompt = "@write slow.txt s\\n@commit slow\\n@sleep 120"
depends_on = ["two"]
""",
    )
    proc = cli("fanout", str(path), "--backend", "local", "--name", "grp", "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    driver = json.loads(proc.stdout)["detached_pid"]
    retry_until(lambda: cli.status_or_none("grp-one"), timeout=60)
    os.kill(driver, signal.SIGKILL)
    retry_until(lambda: not _alive(driver), timeout=60)
    st = json.loads(cli("status", "grp", "--json").stdout)[0]
    assert st["status"] == "running"

    attach = cli.popen("attach", "grp")
    try:
        cli.wait_status("grp-slow", lambda s: s["status"] == "running", timeout=90)
        proc = cli("kill", "grp")
        assert proc.returncode == 0, proc.stderr
        assert attach.wait(timeout=60) == 1
    finally:
        if attach.poll() is None:
            attach.kill()
        attach.communicate()
    rep = report(cli, "grp")
    assert rep["status"] == "killed"
    rows = {r["task"]: r for r in rep["tasks"]}
    assert rows["one"]["status"] == rows["two"]["status"] == "completed"
    assert rows["slow"]["status"] == "killed"
    assert "slow.txt" in branch_files(repo, "sandboxrun/grp-slow")
    # nothing started twice: one session per task, and one agent run each
    names = [s["name"] for s in cli.json("status")]
    assert sorted(n for n in names if n.startswith("grp-")) == ["grp-one", "grp-slow", "grp-two"]
    for name in ("grp-one", "grp-two", "grp-slow"):
        phases = [
            json.loads(line)
            for line in cli("logs", name, "--json").stdout.splitlines()
            if '"phase"' in line
        ]
        running = [p for p in phases if p["kind"] == "phase" and p["payload"]["phase"] == "running"]
        assert len(running) == 1, name


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][:1] != "Z"
