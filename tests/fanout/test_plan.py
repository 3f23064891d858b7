"""`plan split`'s pure parts: reading the CLI's JSON result, writing TOML that reads back."""

from __future__ import annotations

import json
import tomllib

import pytest

from sandboxrun.errors import AgentError
from sandboxrun.fanout.plan import split_argv, tasks_from_result, to_toml


def test_tasks_from_structured_output_or_result_text():
    tasks = [{"name": "a", "prompt": "x", "depends_on": []}]
    out = json.dumps({"type": "result", "is_error": False, "structured_output": {"tasks": tasks}})
    assert tasks_from_result(out) == tasks
    out = json.dumps({"type": "result", "result": json.dumps({"tasks": tasks})})
    assert tasks_from_result(out) == tasks
    for bad in ("", "not json", json.dumps({"is_error": True, "result": "boom"}), "{}"):
        with pytest.raises(AgentError):
            tasks_from_result(bad)


def test_toml_round_trips_any_text():
    tasks = [
        {
            "name": "a",
            "prompt": 'quote " back\\slash\nnew line\ttab \x01 ctrl ünïcode """ \'\'\'',
            "depends_on": [],
        },
        {"name": "b", "prompt": "y", "depends_on": ["a"]},
    ]
    assert tomllib.loads(to_toml(tasks))["task"] == tasks


def test_split_runs_claude_without_tools():
    argv = split_argv("claude", "m")
    assert argv[argv.index("--tools") + 1] == ""
    assert json.loads(argv[argv.index("--json-schema") + 1])["required"] == ["tasks"]
    assert argv[-2:] == ["--model", "m"]
