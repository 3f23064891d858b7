"""Credential values never reach what sandboxrun stores or prints."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.redact import Redactor, clamp, secret_values


def rand(n: int) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def test_which_variables_are_secrets() -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-" + rand(40),
        "CLAUDE_CODE_OAUTH_TOKEN": rand(30),
        "E2B_API_KEY": "e2b_" + rand(40),
        "GITHUB_TOKEN": rand(36),
        "STRIPE_SECRET": rand(20),
        "DB_PASSWORD": "hunter2hunter2",
        "npm_config__auth": rand(20),
        "SHORT_TOKEN": "abc",  # too short to be a real credential: left alone
        "FEATURE_KEY": "true",
        "SSH_KEY_PATH": "/home/me/.ssh/id_rsa",  # a path, not a secret
        "KEYBOARD": "us-international",
        "HOME": "/home/me",
        "PWD": "/home/me/project",
    }
    found = secret_values(env)
    assert set(found.values()) == {
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "E2B_API_KEY",
        "GITHUB_TOKEN",
        "STRIPE_SECRET",
        "DB_PASSWORD",
        "npm_config__auth",
    }


def test_redacts_text_bytes_and_json() -> None:
    key, token = "sk-ant-" + rand(40), rand(32)
    r = Redactor.from_env({"ANTHROPIC_API_KEY": key, "MY_TOKEN": token, "HOME": "/h"})
    line = f"ANTHROPIC_API_KEY={key} and again {key}{token}"
    assert r.text(line) == (
        "ANTHROPIC_API_KEY=[redacted:ANTHROPIC_API_KEY] and again "
        "[redacted:ANTHROPIC_API_KEY][redacted:MY_TOKEN]"
    )
    assert key.encode() not in r.bytes(line.encode() + b"\xff\0")
    obj = r.obj({"a": [key, {"b": f"x{token}y"}], key: 1, "n": 3})
    assert key not in str(obj) and token not in str(obj) and obj["n"] == 3
    assert not Redactor.from_env({"HOME": "/h"})
    assert Redactor.from_env({}).text(line) == line


def test_a_value_inside_another_is_replaced_whole() -> None:
    inner = rand(12)
    outer = inner + rand(12)
    r = Redactor.from_env({"A_TOKEN": inner, "B_TOKEN": outer})
    assert r.text(outer) == "[redacted:B_TOKEN]"


def test_clamp_bounds_strings_and_nesting() -> None:
    value = {"t": "x" * 10_000, "l": list(range(1000)), "d": [[[[[[[[[[1]]]]]]]]]]}
    out = clamp(value, 100)
    assert len(out["t"]) < 150 and out["t"].endswith("more chars]")
    assert len(out["l"]) == 201
    assert "elided" in str(out["d"])


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["isolated", "--no-isolation"])
def test_an_agent_printing_its_environment_leaks_no_key(cli, repo, isolation) -> None:
    """Events in state.db, agent.log/agent.stderr/patch artifacts and `logs` keep no value.

    Confined, the agent sees only Claude's own variables (ANTHROPIC_*, CLAUDE_CODE_*);
    unconfined, it inherits everything: either way no value it can print is stored.
    """
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + rand(60),
        "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-" + rand(60),
        "E2B_API_KEY": "e2b_" + rand(40),
        "MY_SERVICE_TOKEN": rand(32),
        "DB_PASSWORD": rand(16),
    }
    plan = (
        "@env\n"
        "@bash env\n"
        "@bash env > env.txt\n"
        "@commit agent: save the environment\n"
        "@bash printenv ANTHROPIC_API_KEY > leftover.txt\n"
        "@error failed with $CLAUDE_CODE_OAUTH_TOKEN\n"
    )
    flags = [isolation] if isolation.startswith("--") else []
    proc = cli(
        "run", "--backend", "local", *flags, "--name", "leak", "--prompt", plan, env=secrets,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0  # the agent ends with an error result (its text has a token)
    home = Path(os.environ["SANDBOXRUN_HOME"])
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "agent.log" for p in stored)
    assert any(p.name.startswith("state.db") for p in stored)
    outputs = [proc.stdout, proc.stderr]
    for args in (["logs", "leak", "--raw"], ["logs", "leak", "--json"], ["logs", "leak"],
                 ["status", "leak", "--json"], ["status", "leak"]):  # fmt: skip
        out = cli(*args, env={})  # a shell without the credentials
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout + out.stderr)
    for name, value in secrets.items():
        for path in stored:
            assert value.encode() not in path.read_bytes(), (name, path)
        for text in outputs:
            assert value not in text, name
    raw = cli("logs", "leak", "--raw").stdout
    seen = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"]
    if flags:
        seen += ["E2B_API_KEY", "MY_SERVICE_TOKEN", "DB_PASSWORD"]
    for name in seen:  # the agent printed them, and they were replaced
        assert f"[redacted:{name}]" in raw, name
    assert "failed with [redacted:CLAUDE_CODE_OAUTH_TOKEN]" in cli.status("leak")["error"]
    # the work itself comes back as the agent made it: the branch is the agent's output
    assert "env.txt" in git(repo, "ls-tree", "-r", "--name-only", "sandboxrun/leak")


def test_the_store_caps_any_event(tmp_path: Path) -> None:
    """Whatever a writer passes, one event row stays under MAX_EVENT_CHARS."""
    from sandboxrun.store import MAX_EVENT_CHARS, SessionStore

    store = SessionStore(tmp_path / "state.db")
    s = store.create_session(name="cap", mode="sandbox", backend="local")
    store.add_event(s.id, "stdout", {"line": "x" * (5 * MAX_EVENT_CHARS), "n": 1})
    store.add_event(s.id, "odd", {f"k{i}": "y" * 100_000 for i in range(1000)})
    store.add_event(s.id, "small", {"line": "ok"})
    rows = store.conn.execute("SELECT kind, length(payload) AS n FROM events").fetchall()
    assert all(r["n"] <= MAX_EVENT_CHARS for r in rows)
    events = {e["kind"]: e["payload"] for e in store.events(s.id)}
    assert events["stdout"]["line"].endswith("more chars]") and events["stdout"]["n"] == 1
    assert events["small"] == {"line": "ok"}
    store.close()
