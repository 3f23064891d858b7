"""`sandboxrun hooks install` and `sandboxrun install` on real settings files, real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sbr_testlib import CLI, run_on_pty

from sandboxrun.hook import EVENTS
from sandboxrun.local.hooks_install import hook_settings, is_ours, merge_hooks, remove_hooks

THEIRS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(ls:*)"]},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "my-guard.sh"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
        "PermissionRequest": [{"hooks": [{"type": "command", "command": "x"}]}],
    },
}


@pytest.fixture
def sbr(proj: Path, tmp_path: Path) -> CLI:
    cli = CLI(proj)
    config = tmp_path / "claude-config"
    base_env = cli.env

    def env(extra=None):
        return base_env({"CLAUDE_CONFIG_DIR": str(config), **(extra or {})})

    cli.env = env  # type: ignore[method-assign]
    cli.config = config  # type: ignore[attr-defined]
    return cli


def ours_per_event(settings: dict) -> dict[str, int]:
    return {
        event: sum(is_ours(h) for g in groups for h in g.get("hooks", []))
        for event, groups in settings.get("hooks", {}).items()
    }


@pytest.mark.parametrize(
    ("flag", "rel"),
    [("--local", ".claude/settings.local.json"), ("--shared", ".claude/settings.json")],
)
def test_install_merges_keeps_theirs_idempotent_and_uninstalls_exactly_ours(sbr, proj, flag, rel):
    path = proj / rel
    path.parent.mkdir()
    path.write_text(json.dumps(THEIRS, indent=4))
    out = sbr("hooks", "install", flag)
    assert out.returncode == 0, out.stderr
    merged = json.loads(path.read_text())
    assert merged["model"] == "opus" and merged["permissions"] == THEIRS["permissions"]
    assert merged["hooks"]["PreToolUse"][0] == THEIRS["hooks"]["PreToolUse"][0]
    assert merged["hooks"]["Stop"][0] == THEIRS["hooks"]["Stop"][0]
    assert merged["hooks"]["PermissionRequest"] == THEIRS["hooks"]["PermissionRequest"]
    assert {e: n for e, n in ours_per_event(merged).items() if n} == {e: 1 for e in EVENTS}
    backup = path.with_name(path.name + ".sandboxrun.bak")
    assert json.loads(backup.read_text()) == THEIRS
    # Twice: nothing added, file untouched.
    before = path.read_text()
    again = sbr("hooks", "install", flag)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert path.read_text() == before
    status = sbr.json("hooks", "install", "--status")
    by_scope = {e["scope"]: e for e in status}
    assert by_scope[flag.strip("-")]["installed"] is True
    assert by_scope["global"]["installed"] is False
    # Uninstall: exactly ours go, theirs are as they were.
    out = sbr("hooks", "install", "--uninstall", flag)
    assert out.returncode == 0 and "removed 8" in out.stdout
    assert json.loads(path.read_text()) == THEIRS
    out = sbr("hooks", "install", "--uninstall", flag)
    assert out.returncode == 0 and "nothing changed" in out.stdout


def test_local_settings_file_is_excluded_from_git(sbr, proj):
    assert sbr("hooks", "install", "--local").returncode == 0
    status = subprocess.run(
        ["git", "-C", str(proj), "status", "--porcelain"], capture_output=True, text=True
    ).stdout
    assert status == ""


def test_global_uses_claude_config_dir(sbr):
    out = sbr("hooks", "install", "--global")
    assert out.returncode == 0, out.stderr
    settings = json.loads((sbr.config / "settings.json").read_text())
    assert set(settings["hooks"]) == set(EVENTS)
    assert not (sbr.config / "settings.json.sandboxrun.bak").exists()  # nothing to back up


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '"text"', "\xff"])
def test_invalid_json_is_refused_and_nothing_changes(sbr, proj, content):
    path = proj / ".claude" / "settings.local.json"
    path.parent.mkdir()
    path.write_bytes(content.encode("latin-1"))
    for args in (["--local"], ["--local", "--uninstall"]):
        out = sbr("hooks", "install", *args)
        assert out.returncode == 1 and "nothing was changed" in out.stderr, out.stderr
        assert path.read_bytes() == content.encode("latin-1")
    assert not path.with_name(path.name + ".sandboxrun.bak").exists()
    status = sbr.json("hooks", "install", "--status")
    assert [e for e in status if e["scope"] == "local"][0]["error"]


def test_hooks_of_unexpected_shape_are_refused(sbr, proj):
    path = proj / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text('{"hooks": ["not", "an", "object"]}')
    out = sbr("hooks", "install", "--shared")
    assert out.returncode == 1 and "not an object" in out.stderr
    assert path.read_text() == '{"hooks": ["not", "an", "object"]}'


def test_bad_flags(sbr, proj, tmp_path):
    out = sbr("hooks", "install")  # not a terminal: no question, a usage error
    assert out.returncode == 2 and "--global" in out.stderr and "--local" in out.stderr
    out = sbr("hooks", "install", "--local", "--global")
    assert out.returncode == 2 and "pick one" in out.stderr
    out = sbr("hooks", "install", "--status", "--uninstall")
    assert out.returncode == 2
    out = sbr("hooks", "install", "--local", cwd=tmp_path)
    assert out.returncode == 2 and "needs a git repository" in out.stderr
    out = sbr("install")
    assert out.returncode == 2 and "--all or --status" in out.stderr
    out = sbr("install", "--all", "--status")
    assert out.returncode == 2
    assert not (proj / ".claude").exists() and not sbr.config.exists()


def test_terminal_without_flag_asks(sbr, proj):
    """On a terminal the command asks where (a real pty)."""
    code, output = run_on_pty(["hooks", "install"], proj, sbr.env(), b"Scope", b"shared")
    assert code == 0, output
    assert b"installed sandboxrun hooks" in output
    assert (proj / ".claude" / "settings.json").exists()


def test_install_all_and_status(sbr):
    out = sbr("install", "--all")
    assert out.returncode == 0, out.stderr
    assert "hooks: installed" in out.stdout and "mcp" in out.stdout
    report = sbr.json("install", "--status")
    assert report["hook_executable_found"] is True
    assert {e["scope"]: e["installed"] for e in report["hooks"]}["global"] is True
    again = sbr("install", "--all")
    assert "already installed" in again.stdout


def test_pure_merge_and_remove_round_trip():
    merged, changed = merge_hooks(THEIRS, "/opt/bin/sandboxrun-hook")
    assert changed
    same, changed = merge_hooks(merged, "/opt/bin/sandboxrun-hook")
    assert not changed and same == merged
    moved, changed = merge_hooks(merged, "/new/place/sandboxrun-hook")  # reinstalled elsewhere
    assert changed and ours_per_event(moved) == ours_per_event(merged)
    assert remove_hooks(moved) == (THEIRS, 8)
    assert remove_hooks({}) == ({}, 0)
    only_ours = hook_settings("/x/sandboxrun-hook")
    assert remove_hooks(only_ours) == ({}, 8)
    assert not is_ours({"type": "command", "command": "sandboxrun-hooks-not"})
    assert not is_ours({"type": "command", "command": "echo 'unbalanced"})
