"""What a new user meets at the CLI edge: every error one ``Error:`` line and a ``Hint:`` that
names a working command, the right exit code (1 error, 2 usage), JSON on stdout under
``--json`` also when the command fails, never a traceback. Real processes on real repos."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import edge_error, git

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("sandboxrun"))


@pytest.mark.parametrize(
    ("args", "code", "message", "hint"),
    [
        (["status", "--bogus"], 2, "No such option: --bogus", "`sandboxrun status -h`"),
        (["logs"], 2, "Missing argument", "`sandboxrun logs -h`"),
        (
            ["nosuchcommand"],
            2,
            "No such command 'nosuchcommand'",
            "`sandboxrun -h` for its commands and options",
        ),
        (["template", "nosuch"], 2, "No such command", "`sandboxrun template -h`"),
        (["run", "--prompt", "x", "--max-turns", "0"], 2, "--max-turns", "`sandboxrun run -h`"),
        (["read", "x", "--last", "many"], 2, "--last", "`sandboxrun read -h`"),
        (["status", "nosuch"], 1, "no session matches 'nosuch'", "sandboxrun status"),
        (["report", "nosuch"], 1, "no group named 'nosuch'", "sandboxrun groups"),
        # destructive only when asked alone: never as a side effect of a listing
        (["warm", "--delete", "--list"], 2, "--delete cannot be combined", "warm --list"),
        (["warm", "--delete", "--setup", "npm ci"], 2, "--delete cannot", "warm --delete"),
    ],
)
def test_every_error_is_one_error_line_and_a_hint(cli, args, code, message, hint):
    """click's own usage errors look like ours: no boxed panel, one ``Error:``, one ``Hint:``."""
    proc = subprocess.run(
        [CONSOLE_SCRIPT, *args], cwd=cli.cwd, env=cli.env(), capture_output=True, text=True
    )
    assert proc.returncode == code, proc.stderr
    got_message, got_hint = edge_error(proc.stderr)
    assert message in got_message
    assert got_hint and hint in got_hint
    assert "╭" not in proc.stderr and "│" not in proc.stderr  # no rich panel
    assert proc.stdout == ""  # without --json nothing goes to stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status", "nosuch"], 1),
        (["logs", "nosuch"], 1),
        (["kill", "nosuch"], 1),
        (["download", "nosuch"], 1),
        (["read", "nosuch"], 1),
        (["integrate", "nosuch"], 1),
        (["status", "--repo", "/nonexistent"], 1),
        (["run", "--prompt", "x", "--timeout", "soon"], 2),
        (["status", "--bogus"], 2),
    ],
)
def test_json_errors_are_json_on_stdout(cli, args, code):
    """With --json a failing command still prints one JSON object (error, hint, exit_code)."""
    proc = cli(*args, "--json")
    assert proc.returncode == code, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"error", "hint", "exit_code"}
    assert data["exit_code"] == code and data["error"] and data["hint"]
    message, _ = edge_error(proc.stderr)
    assert message == data["error"]


def test_json_after_a_double_dash_is_not_the_flag(cli):
    proc = cli("logs", "x", "--", "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    edge_error(proc.stderr)


def test_no_arguments_prints_the_help(cli):
    proc = cli()
    assert proc.returncode == 2
    assert "Usage:" in proc.stdout and "Traceback" not in proc.stderr
    group = cli("template")
    assert group.returncode == 2 and "build" in group.stdout


def test_usage_error_creates_nothing(cli, repo):
    """A flag click rejects is refused before anything exists: no row, branch or worktree."""
    before = git(repo, "branch", "--list")
    proc = cli("run", "--backend", "local", "--prompt", "x", "--max-turns", "-1")
    assert proc.returncode == 2
    edge_error(proc.stderr)
    assert git(repo, "branch", "--list") == before
    assert not (repo / ".worktrees").exists()
    db = Path(cli.env()["SANDBOXRUN_HOME"]) / "state.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_install_status_reports_the_mcp_server_entry(cli, repo, tmp_path):
    """`install --status` says where the MCP server is configured (it used to claim there was
    no MCP server in sandboxrun at all), and a broken config file is reported, not raised."""
    home = tmp_path / "userhome"
    home.mkdir()
    env = {"HOME": str(home), "CLAUDE_CONFIG_DIR": ""}
    before = cli("install", "--status", "--json", env=env)
    assert before.returncode == 0, before.stderr
    assert {e["scope"]: e["installed"] for e in json.loads(before.stdout)["mcp"]} == {
        "local": False,
        "global": False,
    }
    assert "sandboxrun mcp install" in cli("install", "--status", env=env).stdout
    assert cli("mcp", "install", "--local", env=env).returncode == 0
    (home / ".claude.json").write_text("{not json")
    after = json.loads(cli("install", "--status", "--json", env=env).stdout)
    assert {e["scope"]: e["installed"] for e in after["mcp"]} == {"local": True, "global": None}
    text = cli("install", "--status", env=env).stdout
    assert "not part of sandboxrun" not in text and "unreadable" in text


@pytest.mark.parametrize("flag", ["--timeout", "--warn-at"])
def test_infinite_duration_is_refused_before_anything_exists(cli, repo, flag):
    """`--timeout 999...9h` (a float overflow to infinity) used to start the run and fail it
    with an OverflowError; now it is a usage error and nothing is created."""
    before = git(repo, "branch", "--list")
    proc = cli("run", "--backend", "local", "--prompt", "x", flag, "9" * 400 + "h")
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "too long" in message and hint and "720h" in hint
    assert git(repo, "branch", "--list") == before
    assert not (repo / ".worktrees").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe timeout", "is not UTF-8 text"),
        (b"max_turns = [1]\n", "invalid value for 'max_turns'"),
        (b"timeout = [\n", "cannot parse the sandboxrun config"),
        (b'timeot = "20m"\n', "unknown setting 'timeot'"),
    ],
)
def test_a_broken_repo_config_is_one_error_and_creates_nothing(cli, repo, content, message):
    (repo / ".sandboxrun.toml").write_bytes(content)
    before = git(repo, "branch", "--list")
    proc = cli("run", "--backend", "local", "--prompt", "x")
    assert proc.returncode == 1, proc.stderr
    got, hint = edge_error(proc.stderr)
    assert message in got and hint
    assert git(repo, "branch", "--list") == before
    assert not (repo / ".worktrees").exists()


def test_download_into_a_file_or_an_impossible_place_is_an_error(cli, repo, tmp_path):
    """`download --output` naming a file, or a directory that cannot be made, was a
    FileExistsError/FileNotFoundError traceback; now one error naming the path."""
    assert (
        cli("run", "--backend", "local", "--name", "dl", "--prompt", "@write f.txt hi").returncode
        == 0
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("mine\n")
    proc = cli("download", "dl", "--output", str(a_file))
    assert proc.returncode == 2
    message, hint = edge_error(proc.stderr)
    assert message == f"{a_file} is not a directory" and hint and "--output" in hint
    assert a_file.read_text() == "mine\n"
    blocked = a_file / "sub"
    proc = cli("download", "dl", "--output", str(blocked), "--json")
    assert proc.returncode == 1
    message, _ = edge_error(proc.stderr)
    assert message.startswith(f"cannot create {blocked}")
    assert json.loads(proc.stdout)["exit_code"] == 1
    spaced = tmp_path / "dl ü dir"
    ok = cli("download", "dl", "--output", str(spaced), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["directory"] == str(spaced)


def test_apply_from_a_missing_or_non_directory_path_says_so(cli, repo, tmp_path):
    """`apply --from` a path that is not there said "no collected work" as if the snapshot
    were empty; it names what is wrong with the path and the command that makes one."""
    assert (
        cli("run", "--backend", "local", "--name", "ap", "--prompt", "@write f.txt hi").returncode
        == 0
    )
    missing = tmp_path / "nowhere"
    proc = cli("apply", "ap", "--from", str(missing))
    assert proc.returncode == 2
    message, hint = edge_error(proc.stderr)
    assert message == f"--from {missing} does not exist"
    assert hint and "sandboxrun download ap -o DIR" in hint
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    proc = cli("apply", "ap", "--from", str(a_file))
    assert proc.returncode == 2
    assert edge_error(proc.stderr)[0] == f"--from {a_file} is not a directory"


@pytest.mark.parametrize(
    ("plan", "output", "message"),
    [
        ("DIR", "tasks.toml", "is a directory"),
        ("PLAN.md", "DIR", "is a directory"),
        ("EMPTY.md", "tasks.toml", "is empty"),
        ("PLAN.md", "missing/tasks.toml", "does not exist"),
        ("missing.md", "tasks.toml", "does not exist"),
    ],
)
def test_plan_split_checks_its_paths_before_asking_claude(cli, repo, plan, output, message):
    """Each refused before Claude is run (its answer costs money): the stand-in agent would
    otherwise be asked, and the error would come after it."""
    (repo / "DIR").mkdir()
    (repo / "PLAN.md").write_text("Build it.\n")
    (repo / "EMPTY.md").write_text("\n")
    proc = cli("plan", "split", plan, "-o", output, env={"SANDBOXRUN_CLAUDE_BIN": "/nonexistent"})
    assert proc.returncode == 2, proc.stderr
    got, hint = edge_error(proc.stderr)
    assert message in got and hint
    assert not (repo / "tasks.toml").exists()


def test_an_unexpected_file_error_is_one_line_not_a_traceback():
    from sandboxrun.cli import file_fault

    fault = file_fault(FileExistsError(17, "File exists", "/x/y"))
    assert fault is not None and fault.message == "File exists: /x/y" and fault.hint
    assert file_fault(OSError(5, "Input/output error")) is None  # not ours to explain


TASKS = '[[task]]\nname = "a"\nprompt = "@write a.md A"\n'


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hard-factor", "0.5"], "--hard-factor must be at least 1"),
        (["--budget-usd", "nan"], "--budget-usd must be positive"),
        (["--budget-minutes", "-1"], "--budget-minutes must be positive"),
        (["--max-parallel", "0"], "--max-parallel must be at least 1"),
        (["--start-rate", "0"], "--start-rate must be positive"),
    ],
)
def test_fanout_bad_numbers_are_usage_errors_with_a_hint(cli, repo, tmp_path, flags, message):
    """A hard factor below 1 would stop running tasks before the budget stops new ones."""
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(TASKS)
    proc = cli("fanout", str(tasks), "--backend", "local", "--name", "g", *flags)
    assert proc.returncode == 2, proc.stderr
    got, hint = edge_error(proc.stderr)
    assert message in got and hint
    assert cli.json("groups") == []
    assert "sandboxrun/g-a" not in git(repo, "branch", "--list")


@pytest.mark.slow
def test_report_and_integrate_refuse_bad_targets(cli, repo, tmp_path):
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(TASKS)
    assert cli("fanout", str(tasks), "--backend", "local", "--name", "g").returncode == 0
    for target, where in ((tmp_path, "is a directory"), (tmp_path / "no" / "r.html", "not exist")):
        proc = cli("report", "g", "--format", "html", "-o", str(target))
        assert proc.returncode == 2, proc.stderr
        got, hint = edge_error(proc.stderr)
        assert where in got and hint
    proc = cli("integrate", "g", "--into", "bad..name", "--json")
    assert proc.returncode == 2, proc.stderr
    got, hint = edge_error(proc.stderr)
    assert got == "'bad..name' is not a valid branch name" and hint and "--into" in hint
    assert json.loads(proc.stdout)["exit_code"] == 2
    assert "bad..name" not in git(repo, "branch", "--list")
    assert cli("integrate", "g", "--json").returncode == 0


def test_a_bare_repository_is_named_and_never_packed(cli, tmp_path):
    """`pack --list` in a bare repository used to list git's own files (hooks, info/exclude)
    as the upload; every command now says it is a bare repository."""
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    proc = cli("pack", "--list", cwd=bare)
    assert proc.returncode == 1 and proc.stdout == ""
    message, hint = edge_error(proc.stderr)
    assert "is a git directory" in message and hint and "clone" in hint
    for args in (["worktree", "list"], ["run", "--backend", "local", "--prompt", "x"]):
        proc = cli(*args, cwd=bare)
        assert proc.returncode == 1
        message, hint = edge_error(proc.stderr)
        assert message == f"{bare} is a bare repository (it has no work tree)"
        assert hint and "git clone" in hint


def test_outside_a_repository_the_error_names_the_absolute_path(cli, tmp_path):
    plain = tmp_path / "plain dir ü"
    plain.mkdir()
    proc = cli("presence", cwd=plain)
    assert proc.returncode == 1
    message, _ = edge_error(proc.stderr)
    assert message == f"{plain} is not inside a git repository"


def test_a_repository_without_commits_says_so_for_local_mode(cli, tmp_path):
    """`worktree setup` / `spawn` used to say "'master' is not a commit ... Pass --base"."""
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "init", "-q", str(fresh)], check=True)
    runs = [["run", "--backend", b, "--prompt", "x"] for b in ("local", "e2b")]
    for args in (["worktree", "setup", "api"], ["spawn", "api", "--prompt", "x"], *runs):
        # the repository's fault is said before any about the machine (no claude, no E2B key)
        proc = cli(*args, cwd=fresh, env={"SANDBOXRUN_CLAUDE_BIN": "/nonexistent/claude",
                                          "E2B_API_KEY": ""})  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        message, hint = edge_error(proc.stderr)
        assert message == "the repository has no commits yet" and hint and "commit" in hint
    assert not (fresh / ".worktrees").exists()


def test_worktree_next_step_is_shell_quoted(cli, tmp_path):
    spaced = tmp_path / "my project ü"
    spaced.mkdir()
    git(spaced, "init", "-q", "-b", "main")
    (spaced / "f").write_text("x\n")
    git(spaced, "add", "f")
    git(spaced, "commit", "-q", "-m", "init")
    proc = cli("worktree", "setup", "api", cwd=spaced)
    assert proc.returncode == 0, proc.stderr
    assert f"next: cd '{spaced / '.worktrees' / 'api'}' && claude" in proc.stdout


@pytest.mark.parametrize("command", [["serve"], ["mcp", "--http"]])
def test_a_port_in_use_is_one_error_line(cli, command):
    """uvicorn logged its own `ERROR: [Errno 98] ...` and exited 3; now one Error:/Hint:
    before the banner, exit 1. The port is held by a real listening socket."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = cli(*command, "--port", str(port), timeout=60)
    assert proc.returncode == 1, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert message == f"port {port} on 127.0.0.1 is already in use"
    assert hint and "--port" in hint
    assert "http://" not in proc.stderr  # no banner for a server that never started


def test_a_host_that_does_not_resolve_is_a_usage_error(cli):
    proc = cli("serve", "--host", "999.1.1.1", "--port", "8799", timeout=60)
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "does not resolve" in message and hint and "127.0.0.1" in hint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "api", "--file", "missing.md"], "message file missing.md does not exist"),
        (["send", "api", "--file", "."], "message file . is a directory"),
        (["send", "api", "  "], "the message is empty"),
        (["send", "api"], "give the children's names and then the text"),
        (["wait", "api", "--any", "--all"], "--any and --all exclude each other"),
        (["read", "api", "--last", "-3"], "--last"),
    ],
)
def test_local_mode_bad_input_is_a_usage_error_with_a_hint(cli, args, message):
    """`send --file` of a missing file was a FileNotFoundError; `read --last -3` silently
    dropped the first three messages instead."""
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    got, hint = edge_error(proc.stderr)
    assert message in got and hint


def test_adopt_all_with_nothing_to_adopt_says_so(cli, tmp_path):
    proc = cli("adopt", "--all", env={"SANDBOXRUN_TMUX_SOCKET": str(tmp_path / "tmux.sock")})
    assert proc.returncode == 0, proc.stderr
    assert "no unknown children" in proc.stdout


def test_every_error_the_cli_layer_raises_has_a_hint():
    """The class, not the examples: every SandboxrunError raised in the CLI modules (and the
    user-facing checks of TASKS files, settings and spawn) carries a hint, read from the source
    so a new one without a hint fails here."""
    import ast

    import sandboxrun
    from sandboxrun import errors

    ours = {
        name
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.SandboxrunError)
    }
    root = Path(sandboxrun.__file__).parent
    files = [*sorted((root / "cli").glob("*.py"))]
    files += [root / "fanout" / "tasks.py", root / "config.py", root / "local" / "spawn.py"]
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            has_hint = len(node.exc.args) >= 2 or any(k.arg == "hint" for k in node.exc.keywords)
            if name in ours and not has_hint:
                missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert missing == []


def test_shutdown_with_no_children_says_so(cli, tmp_path):
    proc = cli("shutdown", env={"SANDBOXRUN_TMUX_SOCKET": str(tmp_path / "tmux.sock")})
    assert proc.returncode == 0, proc.stderr
    assert "no running children" in proc.stdout and "nothing to close" in proc.stdout
