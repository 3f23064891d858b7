"""E2B runs over time: warnings, the hard limit, extend, and getting Claude Code in place."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2blib import ENDS_WITHIN, STARTS_WITHIN, clock_starts_once, e2b_fixture
from sbr_testlib import FAKE_CLAUDE, branch_files, logs_json, retry_until

pytestmark = pytest.mark.slow

e2b = e2b_fixture("sk-ant-api03-e2b-lifecycle-secret")


def events(cli, name: str) -> list[dict]:
    return logs_json(cli, name)


def test_warnings_and_timeout_collect_before_the_sandbox_ends(cli, repo, e2b):
    """The sandbox lives exactly --timeout; we warn, stop the agent and collect before that."""
    clock_starts_once(e2b, lambda checkout: (checkout / "early.txt").exists())
    proc = cli("run", "--backend", "e2b", "--name", "limit", "--timeout", "6s",
               "--warn-at", "1s,2s", "--prompt", "@write early.txt x\n@hang")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    st = cli.status("limit")
    assert st["status"] == "timeout", st
    assert "early.txt" in branch_files(repo, "sandboxrun/limit")
    marks = [e["payload"]["mark"] for e in events(cli, "limit") if e["kind"] == "warning"]
    assert marks == [1.0, 2.0, "limit"]
    assert e2b.sandbox_ids() == []


def test_extend_pushes_our_limit_and_the_sandboxes(cli, repo, e2b):
    """`extend` moves our deadline by exactly that, and the sandbox's own end with it."""
    gate = "/home/user/go"  # the agent waits for it inside its sandbox: no race with the clock
    run = cli.popen("run", "--backend", "e2b", "--name", "ext", "--timeout", "10m",
                    "--warn-at", "none", "--prompt",
                    f"@write a.txt a\n@bash while [ ! -e {gate} ]; do sleep 0.05; done\n"
                    "@write done.txt ok")  # fmt: skip
    before = retry_until(
        lambda: (st := cli.status_or_none("ext")) and st["status"] == "running" and st,
        timeout=STARTS_WITHIN,
    )
    sandbox_id = before["sandbox_id"]
    proc = cli("extend", "ext", "30s")
    assert proc.returncode == 0, proc.stderr
    after = cli.status("ext")
    assert after["deadline"] == pytest.approx(before["deadline"] + 30)
    # E2B must not end the sandbox before our new limit (it is set to end right at it).
    assert e2b.sandbox(sandbox_id).end_at >= after["deadline"] - 1
    e2b.host_path(sandbox_id, gate).touch()
    out, err = run.communicate(timeout=ENDS_WITHIN)
    assert run.returncode == 0, err
    assert "done.txt" in branch_files(repo, "sandboxrun/ext")


def test_install_claude_when_the_template_has_none(cli, repo, e2b, tmp_path):
    """--install-claude runs the pinned npm install into a prefix of ours, then uses it."""
    e2b.set_claude(None)
    tools = Path(e2b.manager.tools_dir)
    # A stand-in npm on the sandbox PATH: records its argv and "installs" the fake claude,
    # copied from the tools directory (the sandbox sees that one, not this checkout's path).
    package = tools / "claude-package"
    shutil.copy(FAKE_CLAUDE, package)
    npm = tools / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        'echo "$@" > "$HOME/npm-args.txt"\n'
        'while [ "$1" != "--prefix" ]; do shift; done\n'
        'mkdir -p "$2/bin" && cp /usr/local/sbin/claude-package "$2/bin/claude"\n'
    )
    npm.chmod(0o755)
    try:
        proc = cli("run", "--backend", "e2b", "--name", "noclaude", "--prompt", "x")
        assert proc.returncode == 1
        assert "--install-claude" in proc.stderr
        proc = cli("run", "--backend", "e2b", "--name", "inst", "--install-claude",
                   "--update-claude", "--keep", "--prompt", "@write i.txt installed")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        st = cli.status("inst")
        args = e2b.host_path(st["sandbox_id"], "/home/user/npm-args.txt").read_text()
        assert "install -g --prefix /home/user/.sandboxrun/npm" in args
        assert "@anthropic-ai/claude-code@2.1.330" in args
        updates = [e for e in events(cli, "inst") if e["payload"].get("phase") == "claude_update"]
        assert updates and updates[0]["payload"]["ok"]
        assert "i.txt" in branch_files(repo, "sandboxrun/inst")
    finally:
        npm.unlink()
        package.unlink()
        cli("cleanup")


def test_local_backend_refuses_install_claude(cli, repo, monkeypatch):
    """An E2B-only flag on the local backend is a usage error before anything is made (it was
    ignored, and the run then failed on the missing CLI)."""
    monkeypatch.setenv("SANDBOXRUN_CLAUDE_BIN", "definitely-not-installed-claude")
    proc = cli("run", "--backend", "local", "--name", "li", "--install-claude", "--prompt", "x")
    assert proc.returncode == 2
    assert "--install-claude is for --backend e2b only" in proc.stderr
    assert "Drop --install-claude" in proc.stderr
    assert cli("status", "li").returncode == 1  # no session was made
