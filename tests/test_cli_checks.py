"""`sandboxrun run` refuses bad input and unstartable agents before creating anything.

Every refusal is checked through the CLI (exit code and message) and for debris: no branch,
no worktree, no session row may be left by a run that never started.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from sbr_testlib import git, git_project

from sandboxrun.sandbox.prepare import root_refusal


def assert_no_debris(cli, repo: Path) -> None:
    assert git(repo, "branch", "--list", "sandboxrun/*") == ""
    assert not (repo / ".worktrees").exists() or not any((repo / ".worktrees").iterdir())
    assert json.loads(cli("status", "--all", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prompt-file", "src"], 2, "prompt file src is a directory"),
        (["--prompt", ""], 2, "the prompt is empty (--prompt)"),
        (["--prompt", "x", "--timeout", "0s"], 2, "duration '0s' is zero"),
        (["--prompt", "x", "--warn-at", "0m,5m"], 2, "duration '0m' is zero"),
        (["--prompt", "x", "--max-turns", "0"], 2, "--max-turns"),
        (["--prompt", "x", "--max-turns", "-3"], 2, "--max-turns"),
        (["-f", "README.md", "-f", "src/app.py"], 2, "--prompt-file was given 2 times"),
        (["-p", "one", "-p", "two"], 2, "--prompt was given 2 times"),
        (["--prompt-file", "nope.md"], 2, "prompt file nope.md does not exist"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(cli, repo, args, code, message):
    proc = cli("run", "--backend", "local", *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_debris(cli, repo)


def test_empty_prompt_file_names_the_file(cli, repo):
    (repo / "empty.md").write_text("\n")
    proc = cli("run", "--backend", "local", "--prompt-file", "empty.md")
    assert proc.returncode == 2
    assert "the prompt is empty (prompt file empty.md)" in proc.stderr
    assert "Write the task into empty.md" in proc.stderr


def test_max_turns_zero_in_config_is_refused(cli, repo):
    (repo / ".sandboxrun.toml").write_text("max_turns = 0\n")
    proc = cli("run", "--backend", "local", "--prompt", "x")
    assert proc.returncode == 1
    assert "invalid value for 'max_turns'" in proc.stderr
    assert_no_debris(cli, repo)


def test_e2b_without_agent_credentials_creates_nothing(cli, repo):
    env = {"E2B_API_KEY": "e2b_test_key"}
    clean = {
        k: "" for k in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
    }
    proc = cli("run", "--backend", "e2b", "--prompt", "x", env={**env, **clean})
    assert proc.returncode == 1, proc.stderr
    assert "no Claude credentials" in proc.stderr
    assert "ANTHROPIC_API_KEY" in proc.stderr and "CLAUDE_CODE_OAUTH_TOKEN" in proc.stderr
    assert_no_debris(cli, repo)


def test_missing_claude_creates_nothing(cli, repo, tmp_path):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--prompt",
        "x",
        env={"SANDBOXRUN_CLAUDE_BIN": str(tmp_path / "no-claude")},
    )
    assert proc.returncode == 1
    assert "is not installed" in proc.stderr and "Hint:" in proc.stderr
    assert_no_debris(cli, repo)


@pytest.mark.skipif(os.geteuid() != 0, reason="Claude Code refuses only root")
def test_root_without_isolation_is_refused_before_anything_exists(cli, repo):
    """As root and --no-isolation, the run is refused with a hint before anything exists."""
    # unconfined (bubblewrap would run the agent as uid 1000); an empty IS_SANDBOX is not "1"
    proc = cli(
        "run", "--backend", "local", "--no-isolation", "--prompt", "x", env={"IS_SANDBOX": ""}
    )
    assert proc.returncode == 1, proc.stderr
    assert "as root" in proc.stderr
    assert "Hint:" in proc.stderr and "IS_SANDBOX=1" in proc.stderr
    assert_no_debris(cli, repo)


def test_root_refusal_rule():
    assert root_refusal(0, {}, isolated=False) is not None
    assert root_refusal(0, {"IS_SANDBOX": ""}, isolated=False) is not None
    assert root_refusal(0, {"IS_SANDBOX": "1"}, isolated=False) is None
    assert root_refusal(0, {}, isolated=True) is None
    assert root_refusal(1000, {}, isolated=False) is None


def test_dry_run_needs_no_credentials_even_as_root(cli, repo, tmp_path):
    proc = cli(
        "run",
        "--backend",
        "local",
        "--dry-run",
        "--prompt",
        "x",
        "--name",
        "dry",
        env={"IS_SANDBOX": "", "SANDBOXRUN_CLAUDE_BIN": str(tmp_path / "no-claude")},
    )
    assert proc.returncode == 0, proc.stderr


def test_pack_output_directory(cli, repo, tmp_path):
    out = tmp_path / "outdir"
    out.mkdir()
    proc = cli("pack", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with tarfile.open(out / "project.tar.gz") as tf:
        assert "README.md" in tf.getnames()


def test_pack_json_inside_the_repo_writes_outside_it(cli, repo):
    proc = cli("pack", "--json")
    assert proc.returncode == 0, proc.stderr
    written = Path(json.loads(proc.stdout)["output"]["path"])
    assert written == repo.parent / "project.tar.gz"
    assert written.exists()
    listed = cli("pack", "--list").stdout.splitlines()
    assert not any(name.endswith(".tar.gz") for name in listed)
    assert not list(repo.glob("*.tar.gz"))


@pytest.mark.slow
def test_submodules_left_out_are_named(cli, repo, tmp_path):
    """A repository with submodules: the run says which ones the agent will not see."""
    lib = git_project(tmp_path / "lib", {"lib.c": "int x;\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add submodule")
    proc = cli("run", "--backend", "local", "--dry-run", "--name", "sub", "--prompt", "x")
    assert proc.returncode == 0, proc.stderr
    assert "1 submodule(s) (vendor/lib)" in proc.stderr
    assert "not uploaded" in proc.stderr
    assert "submodule(s) (vendor/lib)" in cli("logs", "sub").stdout
