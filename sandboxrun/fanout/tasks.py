"""TASKS files: parse and validate a fan-out's tasks before anything is created (pure).

A TASKS file is TOML with ``[[task]]`` tables (``name``, ``prompt`` or ``prompt_file``,
``depends_on``, optional ``base``, ``model``, ``timeout``, ``max_turns``), or a directory whose
plan files (``*.md``, ``*.txt``) are independent tasks named after their stems. Every rule is
checked up front and broken ones raise :class:`~sandboxrun.errors.UsageError` naming the rule,
so a bad file never leaves half a group behind.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxrun.config import parse_duration
from sandboxrun.errors import UsageError
from sandboxrun.textfiles import read_text_file

#: task names become part of session and branch names (``<group>-<task>``)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
PLAN_SUFFIXES = (".md", ".txt", ".markdown")
_KEYS = {"name", "prompt", "prompt_file", "depends_on", "base", "model", "timeout", "max_turns"}


@dataclass(frozen=True)
class TaskSpec:
    """One task of a fan-out, validated."""

    name: str
    prompt: str
    depends_on: tuple[str, ...] = ()
    prompt_file: str | None = None
    base: str | None = None
    model: str | None = None
    timeout: float | None = None
    max_turns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "depends_on": list(self.depends_on),
            "prompt_file": self.prompt_file,
            "base": self.base,
            "model": self.model,
            "timeout": self.timeout,
            "max_turns": self.max_turns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**{**data, "depends_on": tuple(data.get("depends_on") or ())})


@dataclass(frozen=True)
class TaskGraph:
    """Validated tasks in a dependency order (every task after its dependencies)."""

    tasks: tuple[TaskSpec, ...]
    source: str = ""
    default_group: str = "fanout"
    by_name: dict[str, TaskSpec] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_name.update({t.name: t for t in self.tasks})

    def dependents(self, name: str) -> list[str]:
        """Tasks that depend on ``name`` directly."""
        return [t.name for t in self.tasks if name in t.depends_on]


def validate_group_name(name: str) -> str:
    """Group names are part of session and branch names: the same rule as task names."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid group name {name!r}",
            "Use 1-40 letters, digits, '_' or '-', starting with a letter or digit (--name).",
        )
    return name


def load_tasks(path: Path) -> TaskGraph:
    """Read a TASKS file or a directory of plan files; raise UsageError on any broken rule."""
    path = Path(path)
    if path.is_dir():
        return _from_directory(path)
    if not path.is_file():
        raise UsageError(
            f"TASKS {path} does not exist",
            "Give a TOML file with [[task]] tables or a directory of plan files.",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot parse {path}: {exc}", "TASKS must be TOML.") from exc
    return parse_tasks(data, base_dir=path.parent, source=str(path), default_group=path.stem)


def _from_directory(path: Path) -> TaskGraph:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in PLAN_SUFFIXES)
    if not files:
        raise UsageError(
            f"{path} has no plan files",
            f"Put one plan per file ({', '.join(PLAN_SUFFIXES)}) in the directory.",
        )
    # a directory's rules are about its files (the [[task]] hints of a TASKS file would
    # send a person to a file they do not have)
    named: dict[str, Path] = {}
    for p in files:
        slug = _slug(p.stem)
        if slug in named:
            raise UsageError(
                f"plan files {named[slug].name!r} and {p.name!r} both make task {slug!r}",
                "Rename one of them: a task is named after its file (letters, digits, '_', '-').",
            )
        named[slug] = p
        if not read_text_file(p, "plan file").strip():
            raise UsageError(
                f"plan file {p} is empty",
                f"Write the plan into it, or move it out of {path}.",
            )
    raw = [{"name": slug, "prompt_file": p.name} for slug, p in named.items()]
    return parse_tasks(
        {"task": raw}, base_dir=path, source=str(path), default_group=_slug(path.name)
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")[:40] or "task"


def parse_tasks(
    data: dict[str, Any], *, base_dir: Path, source: str = "", default_group: str = "fanout"
) -> TaskGraph:
    """Validate parsed TOML (``{"task": [...]}``) into a :class:`TaskGraph`."""
    unknown_top = set(data) - {"task"}
    if unknown_top:
        raise UsageError(
            f"unknown top-level key(s) in {source}: {', '.join(sorted(unknown_top))}",
            "A TASKS file holds only [[task]] tables.",
        )
    raw = data.get("task")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{source} defines no tasks", 'Add [[task]] tables: name = "...", ...')
    specs: list[TaskSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise UsageError(f"task #{i} in {source} is not a table", _TASK_HINT)
        specs.append(_one_task(item, i, base_dir, seen))
        seen.add(specs[-1].name)
    names = {s.name for s in specs}
    for s in specs:
        missing = [d for d in s.depends_on if d not in names]
        if missing:
            raise UsageError(
                f"task {s.name!r} depends on unknown task(s): {', '.join(missing)}",
                f"Known tasks: {', '.join(sorted(names))}.",
            )
    order = topological_order(specs)
    return TaskGraph(tuple(order), source=source, default_group=_slug(default_group))


#: the next step for a task the TASKS file gets wrong
_TASK_HINT = (
    'Each [[task]] has a name, prompt = "..." or prompt_file = "...", and optionally '
    'depends_on = ["other"], base, model, timeout = "20m", max_turns (README: Fan-out).'
)


def _bad(message: str) -> UsageError:
    """A task the TASKS file gets wrong, with the shape of a good one as the hint."""
    return UsageError(message, _TASK_HINT)


def _one_task(item: dict[str, Any], i: int, base_dir: Path, seen: set[str]) -> TaskSpec:
    unknown = set(item) - _KEYS
    label = f"task #{i}"
    if unknown:
        raise UsageError(
            f"{label} has unknown key(s): {', '.join(sorted(unknown))}",
            f"Known keys: {', '.join(sorted(_KEYS))}.",
        )
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(
            f"{label} has an invalid name {name!r}",
            "Task names: 1-40 letters, digits, '_' or '-', starting with a letter or digit.",
        )
    if name in seen:
        raise UsageError(f"duplicate task name {name!r}", "Every task needs its own name.")
    label = f"task {name!r}"
    prompt, prompt_file = item.get("prompt"), item.get("prompt_file")
    if (prompt is None) == (prompt_file is None):
        raise _bad(f"{label} needs exactly one of prompt or prompt_file")
    if prompt_file is not None:
        if not isinstance(prompt_file, str):
            raise _bad(f"{label}: prompt_file must be a string")
        file = (base_dir / prompt_file).expanduser()
        if not file.is_file():
            what = "is a directory" if file.is_dir() else "does not exist"
            raise UsageError(
                f"{label}: prompt file {file} {what}",
                "prompt_file names a file, relative to the TASKS file's directory.",
            )
        prompt = read_text_file(file, f"{label}: prompt file")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad(f"{label} has an empty prompt")
    deps = item.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise _bad(f"{label}: depends_on must be a list of task names")
    if name in deps:
        raise _bad(f"{label} depends on itself (cycle: {name} -> {name})")
    if len(set(deps)) != len(deps):
        raise _bad(f"{label} lists a dependency twice")
    for key in ("base", "model"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise _bad(f"{label}: {key} must be a string")
    timeout = item.get("timeout")
    if timeout is not None:
        if not isinstance(timeout, str | int | float) or isinstance(timeout, bool):
            raise _bad(f'{label}: timeout must be a duration such as "20m"')
        try:
            timeout = parse_duration(timeout)
        except UsageError as exc:
            raise UsageError(f"{label}: {exc.message}", exc.hint) from exc
    turns = item.get("max_turns")
    if turns is not None and (not isinstance(turns, int) or isinstance(turns, bool) or turns < 1):
        raise _bad(f"{label}: max_turns must be a whole number of at least 1")
    return TaskSpec(
        name=name,
        prompt=prompt,
        depends_on=tuple(deps),
        prompt_file=prompt_file,
        base=item.get("base"),
        model=item.get("model"),
        timeout=timeout,
        max_turns=turns,
    )


def topological_order(specs: list[TaskSpec]) -> list[TaskSpec]:
    """Tasks with every dependency first (stable: file order among ready tasks).

    Raises UsageError naming one cycle (``a -> b -> a``) when there is no such order.
    """
    by_name = {s.name: s for s in specs}
    done: set[str] = set()
    order: list[TaskSpec] = []
    remaining = list(specs)
    while remaining:
        ready = [s for s in remaining if all(d in done for d in s.depends_on)]
        if not ready:
            cycle = find_cycle({s.name: list(s.depends_on) for s in remaining})
            raise UsageError(
                f"the tasks depend on each other in a cycle: {' -> '.join(cycle)}",
                "Remove one of these depends_on entries.",
            )
        for s in ready:
            done.add(s.name)
            order.append(by_name[s.name])
        remaining = [s for s in remaining if s.name not in done]
    return order


def find_cycle(deps: dict[str, list[str]]) -> list[str]:
    """One cycle in ``deps`` (name -> dependencies), first node repeated at the end."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def critical_path(durations: dict[str, float], deps: dict[str, list[str]]) -> list[str]:
    """The chain of dependent tasks with the largest total duration (in order)."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(name: str) -> tuple[float, list[str]]:
        if name not in best:
            prev = max(
                (longest(d) for d in deps.get(name, []) if d in durations),
                key=lambda x: x[0],
                default=(0.0, []),
            )
            best[name] = (prev[0] + durations.get(name, 0.0), [*prev[1], name])
        return best[name]

    return max((longest(n) for n in durations), key=lambda x: x[0], default=(0.0, []))[1]
