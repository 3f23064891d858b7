"""Fan-out and plan inputs as a new user gets them wrong: a binary file where a plan, prompt or
message belongs is refused naming it (it went to the agent as its prompt); a prompt_file that
is a directory says so; a bad timeout names its task; a directory of plans is judged by its
files (an empty one, two files that make one task name), not by TASKS-file rules; `plan split`
without Claude Code says how to install it. Each exits 2 (1: no claude) and creates no group.
Real processes, real git and SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sbr_testlib import edge_error

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
UTF16 = "do the thing".encode("utf-16")


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


@pytest.mark.parametrize("data", [BINARY, UTF16])
def test_a_binary_prompt_file_is_refused_everywhere(cli, tmp_path, data):
    plan = _write(tmp_path / "in" / "plan.md", data)
    tasks = _write(tmp_path / "in" / "t.toml", '[[task]]\nname = "a"\nprompt_file = "plan.md"\n')
    for args in (
        ["fanout", str(tasks), "--backend", "local"],
        ["fanout", str(plan.parent), "--backend", "local"],
        ["plan", "split", str(plan), "-o", str(tmp_path / "out.toml")],
        ["send", "api", "--file", str(plan)],
        ["run", "--backend", "local", "--prompt-file", str(plan)],
        ["run", "--backend", "local", "--dry-run", "--prompt-file", str(plan)],
        ["spawn", "api", "--prompt-file", str(plan)],
    ):
        proc = cli(*args, "--json")
        assert proc.returncode == 2, (args, proc.stderr)
        message, hint = edge_error(proc.stderr)
        assert f"{plan} is not a text file" in message, args
        assert hint and "UTF-8" in hint
        assert json.loads(proc.stdout)["exit_code"] == 2
    assert json.loads(cli("groups", "--json").stdout) == []
    assert json.loads(cli("status", "--json").stdout) == []  # no run, no child
    assert not (tmp_path / "out.toml").exists()


@pytest.mark.parametrize(
    ("toml", "words", "hint_words"),
    [
        ('prompt_file = "."', "is a directory", "names a file"),
        ('prompt = "x"\ntimeout = "forever"', "task 'a': invalid duration 'forever'", "20m"),
    ],
)
def test_task_errors_name_the_task_and_the_real_fault(cli, tmp_path, toml, words, hint_words):
    tasks = _write(tmp_path / "t.toml", f'[[task]]\nname = "a"\n{toml}\n')
    proc = cli("fanout", str(tasks), "--backend", "local")
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert words in message and hint and hint_words in hint


def test_a_directory_of_plans_is_judged_by_its_files(cli, tmp_path):
    plans = tmp_path / "plans"
    _write(plans / "api.md", "build the api\n")
    _write(plans / "notes.md", "\n\n")
    proc = cli("fanout", str(plans), "--backend", "local")
    message, hint = edge_error(proc.stderr)
    assert proc.returncode == 2 and f"plan file {plans / 'notes.md'} is empty" in message
    assert hint and "[[task]]" not in hint and str(plans) in hint
    (plans / "notes.md").unlink()
    _write(plans / "my plan.md", "one\n")
    _write(plans / "my-plan.md", "two\n")
    proc = cli("fanout", str(plans), "--backend", "local")
    message, hint = edge_error(proc.stderr)
    assert proc.returncode == 2 and "'my plan.md' and 'my-plan.md' both make task 'my-plan'" in (
        message
    )
    assert hint and "Rename one" in hint
    assert json.loads(cli("groups", "--json").stdout) == []


def test_plan_split_without_claude_says_how_to_install_it(cli, tmp_path):
    plan = _write(tmp_path / "PLAN.md", "# plan\n- build it\n")
    proc = cli(
        "plan", "split", str(plan), "-o", str(tmp_path / "t.toml"),
        env={"SANDBOXRUN_CLAUDE_BIN": str(tmp_path / "no-such-claude")},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "is not installed" in message
    assert hint and "SANDBOXRUN_CLAUDE_BIN" in hint and "by hand" in hint
    assert not (tmp_path / "t.toml").exists()


def test_integrate_says_what_it_left_out_and_refuses_nothing_to_merge(cli, tmp_path):
    from sbr_testlib import git

    tasks = _write(
        tmp_path / "mixed.toml",
        '[[task]]\nname = "ok"\nprompt = "@write ok.txt hi\\n@commit ok"\n'
        '[[task]]\nname = "bad"\nprompt = "@fail 3"\n',
    )
    cli("fanout", str(tasks), "--backend", "local")
    data = cli.json("integrate", "mixed")
    assert data["merged"] == ["sandboxrun/mixed-ok"] and data["left_out"] == {"bad": "failed"}
    human = cli("integrate", "mixed")
    assert human.returncode == 0 and "left out: bad (failed)" in human.stdout
    failing = _write(tmp_path / "failing.toml", '[[task]]\nname = "f"\nprompt = "@fail 3"\n')
    cli("fanout", str(failing), "--backend", "local")
    proc = cli("integrate", "failing", "--json")
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "no completed task to integrate (f failed)" in message
    assert hint and "sandboxrun report failing" in hint
    assert json.loads(proc.stdout)["exit_code"] == 1
    assert git(cli.cwd, "branch", "--list", "sandboxrun/failing/*").strip() == ""
