"""Collection end to end: `sandboxrun run` on the local backend with a hostile stand-in agent,
crashes inside apply, and `download` from a sandbox whose git the agent broke."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from sbr_testlib import GATE_WAIT, branch_files, git, open_gate, retry_until

from sandboxrun.sandbox.apply import FAULT_ENV

pytestmark = pytest.mark.slow


def test_hostile_git_config_in_the_sandbox_never_runs_during_collection(cli, repo, tmp_path):
    marker = tmp_path / "PWNED"
    plan = "\n".join(
        [
            "@write work.txt the work",
            "@commit agent: work",
            "@write left.txt uncommitted",
            f"@bash printf '#!/bin/sh\\necho fsmonitor >> {marker}\\n' > /tmp/fsm-{os.getpid()}",
            f"@bash chmod +x /tmp/fsm-{os.getpid()}",
            f"@bash git config core.fsmonitor /tmp/fsm-{os.getpid()}",
            f"@bash git config filter.x.clean 'sh -c \"echo filter >> {marker}; cat\"'",
            "@bash git config filter.x.required true",
            f"@bash git config core.hooksPath /tmp && git config core.sshCommand 'touch {marker}'",
            "@bash echo '* filter=x' > .git/info/attributes",
        ]
    )
    proc = cli("run", "--backend", "local", "--name", "hostile", "--prompt", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not marker.exists(), marker.read_text()
    files = branch_files(repo, "sandboxrun/hostile")
    assert {"work.txt", "left.txt"} <= files
    assert git(repo, "log", "-2", "--format=%s", "sandboxrun/hostile").splitlines() == [
        "sandboxrun: uncommitted changes left by the agent",
        "agent: work",
    ]


@pytest.mark.parametrize(
    "breakage",
    ["@bash rm -rf .git", "@bash git commit -q --amend -m rewritten", "@bash mkdir .GIT"],
)
def test_broken_or_rewritten_git_still_brings_the_work_back(cli, repo, breakage):
    plan = f"@write a.txt a\n@commit agent: a\n{breakage}\n@write b.txt b\n@delete src/old.py"
    proc = cli("run", "--backend", "local", "--name", "broken", "--prompt", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = branch_files(repo, "sandboxrun/broken")
    assert {"a.txt", "b.txt"} <= files and "src/old.py" not in files
    # The secret the upload left out is still on the branch: never read as a deletion.
    assert "deploy/server.pem" in files
    if "commit" not in breakage:
        assert "note:" in proc.stdout or "one commit instead" in proc.stdout + proc.stderr


@pytest.mark.parametrize("step", ["ref", "worktree"])
def test_a_crash_while_applying_is_finished_by_attach(cli, repo, step):
    plan = "@write a.txt a\n@commit agent: a\n@write b.txt b"
    proc = cli("run", "--backend", "local", "--name", "crashy", "--prompt", plan,
               env={FAULT_ENV: step})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    st = cli.status("crashy")
    assert st["status"] == "collecting"
    home = Path(os.environ["SANDBOXRUN_HOME"])
    assert not (home / "sandboxes" / st["id"]).exists()  # torn down: the work is in artifacts
    proc = cli("attach", "crashy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = cli.status("crashy")
    assert st["status"] == "completed" and len(st["result_commits"]) == 2
    assert {"a.txt", "b.txt"} <= branch_files(repo, "sandboxrun/crashy")
    wt = repo / ".worktrees" / "crashy"
    assert git(wt, "status", "--porcelain") == ""


def test_download_from_a_sandbox_without_git_prints_a_command_that_works(cli, repo):
    run = cli.popen("run", "--backend", "local", "--name", "nogit", "--prompt",
                    f"@bash rm -rf .git\n@write x.txt from a repo without git\n{GATE_WAIT}")  # fmt: skip
    try:
        retry_until(lambda: "x.txt" in cli("logs", "nogit").stdout, timeout=120)
        out = repo.parent / "nogit out"
        proc = cli("download", "nogit", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        commands = [ln.strip() for ln in proc.stdout.splitlines() if ln.startswith("  ")]
        command = next(c for c in commands if c.startswith("git -C"))
        assert subprocess.run(command, shell=True, check=False).returncode == 0
        wt = repo / ".worktrees" / "nogit"
        assert (wt / "x.txt").read_text() == "from a repo without git\n"
        git(wt, "reset", "-q", "--hard")
        git(wt, "clean", "-qfd")
    finally:
        cli("kill", "nogit", "--discard")
        run.kill()
        run.wait(timeout=30)


def test_a_branch_that_moved_during_the_run_is_refused_then_applied_on_request(cli, repo):
    run = cli.popen("run", "--backend", "local", "--name", "moved", "--prompt",
                    f"@write agent.txt agent\n{GATE_WAIT}\n@write late.txt late")  # fmt: skip
    try:
        retry_until(lambda: "agent.txt" in cli("logs", "moved").stdout, timeout=120)
        wt = repo / ".worktrees" / "moved"
        (wt / "mine.txt").write_text("user work\n")
        git(wt, "add", "mine.txt")
        git(wt, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q", "-m",
            "user commit while the agent ran")  # fmt: skip
        open_gate("moved")  # the agent goes on only once the user's commit is in
        out, err = run.communicate(timeout=90)
    finally:
        run.kill()
    assert run.returncode == 1
    st = cli.status("moved")
    assert st["status"] == "failed"
    assert (
        "user commit while the agent ran" in st["error"] and "sandboxrun apply moved" in st["error"]
    )
    assert "agent.txt" not in branch_files(repo, "sandboxrun/moved")
    # the same rule as a lost run's checkpoint: the work is also kept on a side ref, named
    ref = re.search(r"refs/sandboxrun/work/\S+", st["error"]).group(0)
    assert "left as it is" in st["error"]
    assert {"agent.txt", "late.txt"} <= branch_files(repo, ref)
    assert "mine.txt" not in branch_files(repo, ref)
    proc = cli("apply", "moved")
    assert proc.returncode == 1 and "user commit while the agent ran" in proc.stderr
    git(wt, "reset", "-q", "--keep", "HEAD~1")
    proc = cli("apply", "moved")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {"agent.txt", "late.txt"} <= branch_files(repo, "sandboxrun/moved")
    assert cli.status("moved")["status"] == "completed"


def test_mode_changes_are_in_the_printed_summary(cli, repo):
    plan = "@chmod src/app.py 755\n@write tool.sh echo hi\n@chmod tool.sh 755"
    proc = cli("run", "--backend", "local", "--name", "modes", "--prompt", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note:     src/app.py: mode 100644 -> 100755" in proc.stdout
    assert "tool.sh: new executable file" in proc.stdout
