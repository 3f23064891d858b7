"""A hostile agent under ``--backend local``: every escape the issue reproduced must fail.

Real bubblewrap, real git, the stand-in agent (tests/fake_claude.py) told to attack. Each test
also asks for one legitimate change, and checks it still comes back: isolation must not cost
the work. The attacks are shell commands, so their own success or failure does not matter;
what is checked is the state of this machine afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import uuid
from pathlib import Path

import pytest
from sbr_testlib import GATE_WAIT, branch_files, git, retry_until

from sandboxrun.sandbox.backends.bwrap import find_bwrap

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_bwrap() is None, reason="bubblewrap (bwrap) is not installed"),
]


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """A HOME for the user with an SSH key and a shell profile, as the agent would hope."""
    home = tmp_path / "user-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nssh-secret\n")
    (home / ".bashrc").write_text("# the user's profile\n")
    (home / ".claude").mkdir()
    (home / ".claude" / "settings.json").write_text('{"secret": "claude-settings-secret"}\n')
    monkeypatch.setenv("HOME", str(home))
    return home


def run_hostile(cli, name: str, *attacks: str, extra: tuple[str, ...] = ()):
    """Run an agent doing ``attacks`` (shell commands), then one legitimate write."""
    plan = "\n".join([*(f"@bash {a}" for a in attacks), f"@write legit-{name}.txt honest work", ""])
    proc = cli("run", "--backend", "local", "--name", name, *extra, "--prompt", plan)
    return proc


def assert_legit_work_collected(cli, repo: Path, name: str) -> dict:
    st = cli.status(name)
    assert st["status"] == "completed", st
    assert st["isolated"] is True
    assert f"legit-{name}.txt" in branch_files(repo, f"sandboxrun/{name}")
    return st


def test_agent_cannot_touch_the_users_repository(cli, repo):
    """No commit onto main, no hook in .git/hooks, no commit on its own branch, no worktree
    edit: the user's repository is not even visible."""
    main_before = git(repo, "rev-parse", "main")
    attacks = (
        f"git -C {repo} -c user.name=x -c user.email=x@x commit --allow-empty -m pwned-main",
        f"echo 'touch /tmp/pwned' > {repo}/.git/hooks/post-commit",
        f"chmod +x {repo}/.git/hooks/post-commit",
        f"git -C {repo} config core.hooksPath /tmp",
        # Straight onto the session's branch, by plumbing and through its worktree.
        f"git -C {repo} update-ref refs/heads/sandboxrun/repo {main_before.strip()}~0",
        f"git -C {repo}/.worktrees/repo -c user.name=x -c user.email=x@x commit --allow-empty "
        "-m pwned-branch",
        f"echo pwned > {repo}/.worktrees/repo/pwned.txt",
        f"echo pwned > {repo}/README.md",
        f"ls -a {repo} > seen-repo.txt 2>&1",
    )
    proc = run_hostile(cli, "repo", *attacks)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert_legit_work_collected(cli, repo, "repo")
    assert git(repo, "rev-parse", "main") == main_before
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    assert "hookspath" not in git(repo, "config", "--list").lower()
    assert (repo / "README.md").read_text() == "# project\n"
    log = git(repo, "log", "--format=%s", "main..sandboxrun/repo").splitlines()
    assert log == ["sandboxrun: uncommitted changes left by the agent"]
    assert not (repo / ".worktrees" / "repo" / "pwned.txt").exists()
    seen = git(repo, "show", "sandboxrun/repo:seen-repo.txt")
    assert "No such file or directory" in seen, seen


def test_agent_cannot_touch_sandboxrun_state(cli, repo):
    """state.db, the artifacts and other sandboxes under $SANDBOXRUN_HOME are out of reach."""
    home = Path(os.environ["SANDBOXRUN_HOME"])
    script = (
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
        'c.execute("UPDATE sessions SET options=\'{\\"allow_sensitive\\": true}\'"); c.commit()'
    )
    attacks = (
        f"ls -a {home} > seen-home.txt 2>&1",
        f"python3 -c '{script}' {home}/state.db",
        f"echo pwned > {home}/pwned.txt",
        f"echo pwned >> {home}/state.db",
        f"mkdir -p {home}/artifacts/x && echo pwned > {home}/artifacts/x/changes.diff",
        # Its own control directory: forging the exit code, the pid or the log.
        "echo 0 > ../.sandboxrun/agent.exit; echo 1 > ../.sandboxrun/agent.pid",
        "echo '{}' >> ../.sandboxrun/agent.log; ln -sf /etc/passwd ../.sandboxrun/changes.diff",
    )
    proc = run_hostile(cli, "state", *attacks)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    st = assert_legit_work_collected(cli, repo, "state")
    assert not (home / "pwned.txt").exists() and not (home / "artifacts" / "x").exists()
    db = sqlite3.connect(home / "state.db")
    rows = db.execute("SELECT name, options FROM sessions").fetchall()
    db.close()
    assert [json.loads(o)["allow_sensitive"] for _, o in rows] == [False]
    # Only the path down to its own sandbox exists in its view (on a private tmpfs, so its
    # writes there went nowhere).
    seen = git(repo, "show", "sandboxrun/state:seen-home.txt").split()
    assert set(seen) == {".", "..", "sandboxes"}, seen
    assert st["exit_code"] == 0


def test_a_second_session_cannot_reach_the_first(cli, repo):
    """Another session's sandbox (its repo copy) is not visible to the next agent."""
    home = Path(os.environ["SANDBOXRUN_HOME"])
    first = cli.popen(
        "run", "--backend", "local", "--name", "first", "--prompt",
        f"@write mine.txt first agent\n{GATE_WAIT}",  # until killed
    )  # fmt: skip
    try:
        retry_until(lambda: "Write" in cli("logs", "first").stdout, timeout=60)
        first_id = cli.status("first")["id"]
        other = home / "sandboxes" / first_id / "home" / "repo"
        assert (other / "mine.txt").exists()
        proc = run_hostile(cli, "second", f"echo pwned > {other}/mine.txt", f"ls {other}")
        assert proc.returncode == 0, proc.stderr
        assert (other / "mine.txt").read_text() == "first agent\n"
    finally:
        cli("kill", "first")
        first.communicate(timeout=60)
    assert git(repo, "show", "sandboxrun/first:mine.txt") == "first agent\n"


@pytest.fixture
def account_home():
    """The real home of the account running the tests (``/root`` as root), with a canary file
    this test writes there (and removes): the agent must reach neither it nor the directory,
    even though ``HOME`` points elsewhere. Nothing else of that home is read or written."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    tag = uuid.uuid4().hex[:12]
    canary = home / f".sandboxrun-test-canary-{tag}"
    planted = home / f".sandboxrun-test-planted-{tag}"
    canary.write_text(f"account-home-secret-{tag}\n")
    try:
        yield home, canary, planted
    finally:
        canary.unlink(missing_ok=True)
        planted.unlink(missing_ok=True)


def test_agent_cannot_read_or_write_the_users_home(cli, repo, user_home, account_home):
    """~/.ssh, ~/.claude and the rest of $HOME (and the account's own home, e.g. /root) are
    invisible; writes go nowhere."""
    real_home, canary, planted = account_home
    attacks = (
        f"cat {user_home}/.ssh/id_ed25519 > stolen.txt 2>&1",
        f"cat {user_home}/.claude/settings.json >> stolen.txt 2>&1",
        f"cat ~/.ssh/* {real_home}/.ssh/* {canary} >> stolen.txt 2>&1",
        "cat /etc/shadow /etc/gshadow >> stolen.txt 2>&1",
        f"echo pwned >> {user_home}/.bashrc",
        f"mkdir -p {user_home}/.config/autostart && echo pwned > {user_home}/.config/autostart/x",
        f"echo pwned >> {planted}",
        f"echo pwned >> {canary}",
        "echo $HOME > where.txt",
    )
    proc = run_hostile(cli, "home", *attacks)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert_legit_work_collected(cli, repo, "home")
    stolen = git(repo, "show", "sandboxrun/home:stolen.txt")
    assert "ssh-secret" not in stolen and "claude-settings-secret" not in stolen, stolen
    assert "account-home-secret" not in stolen, stolen
    assert "root:" not in stolen, stolen
    assert (user_home / ".bashrc").read_text() == "# the user's profile\n"
    assert not (user_home / ".config").exists()
    assert not planted.exists()
    assert "pwned" not in canary.read_text()
    # Its HOME is a private directory inside its sandbox.
    where = git(repo, "show", "sandboxrun/home:where.txt").strip()
    assert where.startswith(os.environ["SANDBOXRUN_HOME"]) and where.endswith("/home")


def _processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_nothing_the_agent_starts_survives_the_run(cli, repo):
    """A `setsid` daemon that keeps writing (into the worktree, or its sandbox) dies with the
    agent: when `run` returns, no process of the sandbox is left and the worktree is clean."""
    marker = f"sbr-daemon-{uuid.uuid4().hex}"
    worktree = repo / ".worktrees" / "daemon"
    loop = (
        f"while true; do echo {marker} >> {worktree}/late.txt; echo tick >> tick.txt; "
        "sleep 0.05; done"
    )
    plan = (
        f"@daemon trap '' INT TERM HUP; {loop}\n"
        "@bash sleep 30 > /dev/null 2>&1 &\n"
        "@bash for i in $(seq 100); do [ -s tick.txt ] && break; sleep 0.1; done\n"
        "@write legit-daemon.txt honest work\n"
    )
    proc = cli("run", "--backend", "local", "--name", "daemon", "--keep", "--prompt", plan)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert _processes_with(marker) == []
    st = assert_legit_work_collected(cli, repo, "daemon")
    assert not (worktree / "late.txt").exists()
    assert git(worktree, "status", "--porcelain") == ""
    # The daemon did run, inside the sandbox, before it was killed with the agent.
    kept = Path(os.environ["SANDBOXRUN_HOME"]) / "sandboxes" / st["id"] / "home" / "repo"
    assert (kept / "tick.txt").exists()


def test_kill_ends_every_process_of_the_sandbox(cli, repo):
    """`sandboxrun kill` from another terminal: the agent and its daemons are all gone."""
    marker = f"sbr-daemon-{uuid.uuid4().hex}"
    run = cli.popen(
        "run", "--backend", "local", "--name", "killall", "--prompt",
        f"@daemon trap '' INT TERM HUP; while true; do sleep 0.1; done; {marker}\n"
        f"@write made.txt before kill\n{GATE_WAIT}",  # until killed
    )  # fmt: skip
    try:
        retry_until(lambda: "Write" in cli("logs", "killall").stdout, timeout=60)
        assert set(_processes_with(marker)) - {run.pid}, "the daemon should be running"
        assert cli("kill", "killall").returncode == 0
        run.communicate(timeout=60)
    finally:
        run.kill()
        run.communicate()
    assert set(_processes_with(marker)) - {run.pid} == set()
    assert cli.status("killall")["status"] == "killed"
    assert "made.txt" in branch_files(repo, "sandboxrun/killall")


def test_agent_runs_as_an_ordinary_user_without_privileges(cli, repo):
    """uid 1000 inside, no way back to root: no nested user namespace, no remount, no setuid."""
    attacks = (
        "id -u > uid.txt",
        "(unshare -r true && echo userns-allowed || echo userns-refused) > probes.txt 2>&1",
        "(mount -o remount,rw /usr && echo remount-allowed || echo remount-refused) "
        ">> probes.txt 2>&1",
        "(touch /usr/pwned && echo usr-writable || echo usr-readonly) >> probes.txt 2>&1",
        "(touch /etc/pwned && echo etc-writable || echo etc-readonly) >> probes.txt 2>&1",
        "(kill -0 1 && echo pid1-is-bwrap) >> probes.txt 2>&1; ls /proc | grep -c '^[0-9]' "
        "> nprocs.txt",
    )
    proc = run_hostile(cli, "priv", *attacks)
    assert proc.returncode == 0, proc.stderr
    assert_legit_work_collected(cli, repo, "priv")
    assert git(repo, "show", "sandboxrun/priv:uid.txt").strip() == "1000"
    probes = git(repo, "show", "sandboxrun/priv:probes.txt")
    for expected in ("userns-refused", "remount-refused", "usr-readonly", "etc-readonly"):
        assert expected in probes, probes
    assert not Path("/usr/pwned").exists() and not Path("/etc/pwned").exists()
    # Its own PID namespace: only a handful of processes (bwrap, the wrapper, agent, shell).
    assert int(git(repo, "show", "sandboxrun/priv:nprocs.txt")) < 10


def test_no_isolation_is_explicit_warned_and_recorded(cli, repo):
    """--no-isolation runs unconfined, says so, and status shows it."""
    proc = cli(
        "run", "--backend", "local", "--no-isolation", "--name", "loose", "--prompt",
        "@bash id -u > uid.txt",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "WITHOUT isolation" in proc.stderr
    st = cli.status("loose")
    assert st["isolated"] is False
    assert git(repo, "show", "sandboxrun/loose:uid.txt").strip() == str(os.getuid())
    assert "NO (the agent ran unconfined" in cli("status", "loose").stdout
    assert "WARNING running WITHOUT isolation" in cli("logs", "loose").stdout


def test_without_bwrap_local_runs_are_refused_with_the_install_command(cli, repo):
    """No bwrap: refused, naming the package and --no-isolation, leaving nothing behind."""
    proc = cli(
        "run", "--backend", "local", "--name", "nobwrap", "--prompt", "x",
        env={"SANDBOXRUN_BWRAP": "/nonexistent/bwrap"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "bubblewrap" in proc.stderr and "apt-get install bubblewrap" in proc.stderr
    assert "--no-isolation" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sandboxrun/nobwrap" not in git(repo, "branch", "--list")


def test_bwrap_that_cannot_start_a_sandbox_is_refused_before_anything_is_made(cli, repo, tmp_path):
    """User namespaces refused (kernel, AppArmor, container): one clear error, nothing left.

    A kernel that refuses user namespaces cannot be had here, so a stand-in bwrap fails the
    way the real one does then (same message, same exit code).
    """
    broken = tmp_path / "bwrap"
    broken.write_text(
        "#!/bin/sh\n"
        'case "$1" in --version) echo "bubblewrap 0.8.0"; exit 0;; esac\n'
        'echo "bwrap: setting up uid map: Permission denied" >&2\n'
        "exit 1\n"
    )
    broken.chmod(0o755)
    proc = cli(
        "run", "--backend", "local", "--name", "nouserns", "--prompt", "x",
        env={"SANDBOXRUN_BWRAP": str(broken)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "setting up uid map: Permission denied" in proc.stderr
    assert "user namespaces" in proc.stderr and "--no-isolation" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sandboxrun/nouserns" not in git(repo, "branch", "--list")
