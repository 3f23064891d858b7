"""`sandboxrun plan split` with the real Claude Code CLI against the fake API: the CLI's
structured output (its StructuredOutput tool, `--json-schema`) becomes a checked TASKS file."""

from __future__ import annotations

import json
import tomllib

import pytest

from tests.fake_anthropic import tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS = [
    {"name": "api", "prompt": 'Add the "/users" endpoint.\nWith tests.', "depends_on": []},
    {"name": "ui", "prompt": "Build the users page.", "depends_on": []},
    {"name": "e2e", "prompt": "End-to-end test of both.", "depends_on": ["api", "ui"]},
]


def test_split_writes_a_checked_tasks_file(sandboxrun, project, fake_api):
    plan = project / "PLAN.md"
    plan.write_text("# Users\nAn API, a page, and a test across both.\n")
    fake_api.script(tool("StructuredOutput", tasks=TASKS))
    out = project / "tasks.toml"
    proc = sandboxrun("plan", "split", "PLAN.md", "-o", "tasks.toml", "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert [t["name"] for t in json.loads(proc.stdout)] == ["api", "ui", "e2e"]
    written = tomllib.loads(out.read_text())["task"]
    assert written == TASKS
    # the plan reached Claude; it was given no tools but the structured answer
    body = fake_api.main_requests[0].body
    assert "An API, a page" in json.dumps(body)
    names = {t["name"] for t in body["tools"]}
    assert "StructuredOutput" in names and not names & {"Bash", "Write", "Edit", "Read"}
    # the result is a TASKS file fanout accepts as is
    check = sandboxrun("fanout", "tasks.toml", "--backend", "nosuch")
    assert check.returncode == 2 and "nosuch" in check.stderr


def test_a_cycle_in_claudes_answer_is_refused_and_nothing_written(sandboxrun, project, fake_api):
    (project / "PLAN.md").write_text("plan\n")
    cyclic = [
        {"name": "a", "prompt": "x", "depends_on": ["b"]},
        {"name": "b", "prompt": "y", "depends_on": ["a"]},
    ]
    fake_api.script(tool("StructuredOutput", tasks=cyclic))
    proc = sandboxrun("plan", "split", "PLAN.md", "-o", "tasks.toml")
    assert proc.returncode == 2
    assert "cycle" in proc.stderr
    assert not (project / "tasks.toml").exists()
