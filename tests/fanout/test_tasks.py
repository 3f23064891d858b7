"""TASKS files: parsing and every validation rule, before anything is created."""

from __future__ import annotations

import pytest

from sandboxrun.errors import UsageError
from sandboxrun.fanout.tasks import critical_path, find_cycle, load_tasks


def write(tmp_path, text):
    path = tmp_path / "tasks.toml"
    path.write_text(text)
    return path


def test_dependency_order_and_fields(tmp_path):
    (tmp_path / "plan-b.md").write_text("do b")
    graph = load_tasks(
        write(
            tmp_path,
            """
[[task]]
name = "c"
prompt = "do c"
depends_on = ["a", "b"]
timeout = "20m"
max_turns = 3
model = "m1"

[[task]]
name = "a"
prompt = "do a"
base = "main"

[[task]]
name = "b"
prompt_file = "plan-b.md"
""",
        )
    )
    assert [t.name for t in graph.tasks] == ["a", "b", "c"]
    c = graph.by_name["c"]
    assert c.timeout == 1200 and c.max_turns == 3 and c.model == "m1"
    assert graph.by_name["b"].prompt == "do b"
    assert graph.by_name["a"].base == "main"
    assert graph.default_group == "tasks"
    assert graph.dependents("a") == ["c"]


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[task]]\nname = "a"\nprompt = "x"\ndepends_on = ["zz"]\n', "unknown task(s): zz"),
        ('[[task]]\nname = "a"\nprompt = "x"\n[[task]]\nname = "a"\nprompt = "y"\n', "duplicate"),
        ('[[task]]\nname = "a b"\nprompt = "x"\n', "invalid name"),
        ('[[task]]\nname = "-a"\nprompt = "x"\n', "invalid name"),
        ('[[task]]\nprompt = "x"\n', "invalid name"),
        ('[[task]]\nname = "a"\nprompt_file = "nope.md"\n', "does not exist"),
        ('[[task]]\nname = "a"\n', "exactly one of prompt or prompt_file"),
        ('[[task]]\nname = "a"\nprompt = "x"\nprompt_file = "y"\n', "exactly one"),
        ('[[task]]\nname = "a"\nprompt = "  "\n', "empty prompt"),
        ('[[task]]\nname = "a"\nprompt = "x"\nbogus = 1\n', "unknown key(s): bogus"),
        ('[[task]]\nname = "a"\nprompt = "x"\nmax_turns = 0\n', "max_turns"),
        ('[[task]]\nname = "a"\nprompt = "x"\ntimeout = "soon"\n', "invalid duration"),
        ('[[task]]\nname = "a"\nprompt = "x"\ndepends_on = ["a"]\n', "cycle: a -> a"),
        ("title = 'x'\n", "unknown top-level"),
        ("", "defines no tasks"),
        ("[[task]\n", "cannot parse"),
    ],
)
def test_broken_rules_are_usage_errors(tmp_path, body, message):
    with pytest.raises(UsageError) as exc:
        load_tasks(write(tmp_path, body))
    assert message in exc.value.message
    assert exc.value.exit_code == 2


def test_cycle_is_named(tmp_path):
    body = "".join(
        f'[[task]]\nname = "{n}"\nprompt = "x"\ndepends_on = {deps}\n'
        for n, deps in [("a", '["c"]'), ("b", '["a"]'), ("c", '["b"]'), ("d", "[]")]
    )
    with pytest.raises(UsageError) as exc:
        load_tasks(write(tmp_path, body))
    msg = exc.value.message
    assert "cycle" in msg
    cycle = msg.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"} and len(cycle) == 4


def test_directory_of_plans_is_independent_tasks(tmp_path):
    plans = tmp_path / "My Plans"
    plans.mkdir()
    (plans / "add tests.md").write_text("tests")
    (plans / "docs.txt").write_text("docs")
    (plans / "notes.json").write_text("{}")
    graph = load_tasks(plans)
    assert [t.name for t in graph.tasks] == ["add-tests", "docs"]
    assert all(not t.depends_on for t in graph.tasks)
    assert graph.default_group == "My-Plans"


def test_missing_or_empty_inputs(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_tasks(tmp_path / "none.toml")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no plan files"):
        load_tasks(empty)


def test_find_cycle_and_critical_path():
    assert find_cycle({"a": ["b"], "b": []}) == []
    durations = {"a": 5.0, "b": 1.0, "c": 2.0, "d": 10.0}
    deps = {"a": [], "b": [], "c": ["a", "b"], "d": []}
    assert critical_path(durations, deps) == ["d"]
    durations["c"] = 6.0
    assert critical_path(durations, deps) == ["a", "c"]
