"""`plan split`: Claude cuts a plan into fan-out tasks, checked like a hand-written TASKS file.

Claude Code runs headless with no tools (it only reads the plan, given on stdin) and a JSON
output schema (``--json-schema``); its answer is validated by :func:`~.tasks.parse_tasks`
(names, unknown dependencies, cycles) before the TOML is written.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from sandboxrun import process
from sandboxrun.config import INSTALL_CLAUDE_HINT
from sandboxrun.errors import AgentError, UsageError
from sandboxrun.fanout.tasks import TaskGraph, parse_tasks
from sandboxrun.textfiles import read_text_file

SPLIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"},
                    "prompt": {"type": "string"},
                    "depends_on": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "prompt", "depends_on"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["tasks"],
    "additionalProperties": False,
}

SPLIT_INSTRUCTIONS = """Split the plan below into tasks for separate coding agents that work in \
parallel, each on its own git branch of the same repository. Each task needs a short name \
(letters, digits, '-' or '_'), a self-contained prompt (the agent sees only its prompt, not \
the plan), and depends_on: the names of tasks whose finished work it needs (it starts from \
their merged branches). Prefer independent tasks; add a dependency only when one task truly \
builds on another's code. Answer with the structured output only.

--- PLAN ---
"""


def split_argv(claude_bin: str, model: str | None = None) -> list[str]:
    """``claude -p`` with no tools, one JSON result, and the task schema."""
    argv = [
        claude_bin,
        "-p",
        "--output-format",
        "json",
        "--tools",
        "",
        "--json-schema",
        json.dumps(SPLIT_SCHEMA),
    ]
    if model:
        argv += ["--model", model]
    return argv


def tasks_from_result(stdout: str) -> list[dict[str, Any]]:
    """The task list from ``claude -p --output-format json`` output (pure)."""
    try:
        result = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise AgentError("Claude Code did not answer with a JSON result", stdout[:300])
    if result.get("is_error"):
        raise AgentError(
            f"Claude Code failed: {str(result.get('result') or result.get('subtype'))[:300]}"
        )
    data = result.get("structured_output")
    if data is None and isinstance(result.get("result"), str):
        try:
            data = json.loads(result["result"])
        except ValueError:
            data = None
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise AgentError(
            "Claude Code's answer holds no task list",
            "Run again, or write the TASKS file by hand (see `sandboxrun fanout --help`).",
        )
    return tasks


def _toml_string(text: str) -> str:
    # a JSON string is a valid TOML basic string (same escapes, \\uXXXX for control characters)
    return json.dumps(text, ensure_ascii=False)


def to_toml(tasks: list[dict[str, Any]]) -> str:
    """A TASKS file for ``tasks`` (name, prompt, depends_on), prompts as quoted strings."""
    parts = ["# Written by `sandboxrun plan split`; check it, then `sandboxrun fanout` it.\n"]
    for t in tasks:
        deps = ", ".join(_toml_string(str(d)) for d in t.get("depends_on") or [])
        parts.append(
            f"\n[[task]]\nname = {_toml_string(str(t.get('name')))}\n"
            f"prompt = {_toml_string(str(t.get('prompt')))}\n"
            f"depends_on = [{deps}]\n"
        )
    return "".join(parts)


def split_plan(
    plan: Path, output: Path, *, claude_bin: str, model: str | None = None, force: bool = False
) -> TaskGraph:
    """Ask Claude to split ``plan``; validate; write ``output``. Returns the validated graph."""
    # Every check before Claude is asked: its answer costs money and must have a place to go.
    if plan.is_dir():
        raise UsageError(f"plan file {plan} is a directory", "Give the plan's file, e.g. PLAN.md.")
    if not plan.is_file():
        raise UsageError(f"plan file {plan} does not exist", "Check the path, e.g. PLAN.md.")
    if output.is_dir():
        raise UsageError(f"{output} is a directory", "Pass -o with a file name, e.g. tasks.toml.")
    if output.exists() and not force:
        raise UsageError(f"{output} already exists", "Pass --force to replace it.")
    if not output.parent.is_dir():
        raise UsageError(
            f"{output.parent} does not exist", "Create the directory first, or choose another -o."
        )
    text = read_text_file(plan, "plan file")
    if not text.strip():
        raise UsageError(f"plan file {plan} is empty", f"Write the plan into {plan} first.")
    if process.which(claude_bin) is None:
        raise AgentError(
            f"Claude Code ({claude_bin!r}) is not installed on this machine",
            f"{INSTALL_CLAUDE_HINT} Or write the TASKS file by hand (`sandboxrun fanout -h`).",
        )
    res = process.run(
        split_argv(claude_bin, model),
        input=SPLIT_INSTRUCTIONS + text,
        cwd=plan.parent,
        check=False,
        timeout=600,
    )
    tasks = tasks_from_result(res.stdout)
    toml = to_toml(tasks)
    graph = parse_tasks(
        tomllib.loads(toml),
        base_dir=output.parent,
        source="Claude's split",
        default_group=plan.stem,
    )
    output.write_text(toml, encoding="utf-8")
    return graph
