"""Bad TASKS through the real CLI: exit 2 with the rule, and nothing created."""

from __future__ import annotations

import pytest
from sbr_testlib import git


def tasks_file(repo, text, name="tasks.toml"):
    path = repo.parent / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "body, message",
    [
        (
            '[[task]]\nname = "a"\nprompt = "x"\ndepends_on = ["b"]\n'
            '[[task]]\nname = "b"\nprompt = "x"\ndepends_on = ["a"]\n',
            ("a -> b -> a", "b -> a -> b"),
        ),
        ('[[task]]\nname = "a"\nprompt_file = "missing.md"\n', ("does not exist",)),
        ('[[task]]\nname = "a"\nprompt = "x"\ndepends_on = ["q"]\n', ("unknown task(s): q",)),
    ],
)
def test_bad_input_is_a_usage_error_and_creates_nothing(cli, repo, body, message):
    path = tasks_file(repo, body)
    proc = cli("fanout", str(path), "--backend", "local")
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error:")
    assert any(m in proc.stderr for m in message), proc.stderr
    assert cli("status", "tasks").returncode != 0
    assert cli.json("status") == []
    assert git(repo, "branch", "--list", "sandboxrun/*") == ""
