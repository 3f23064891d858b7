"""State faults: a corrupt, read-only or locked ``state.db``, a full disk, a relative
``SANDBOXRUN_HOME``. Every command (run, status, logs, attach, kill, download, cleanup, the
local-mode commands), the MCP server and the hook meet them with one clear line and the next
step (exit 1; the hook logs and exits 0), never a traceback. Real SQLite files, real locks held
by another process, a real tmpfs filled to the last byte (as root), a real read-only mount, a
real ``RLIMIT_FSIZE``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import edge_error, retry_until

from sandboxrun.faults import StateError, db_fault, disk_fault
from sandboxrun.store import SessionStore, Status

#: commands that open the state database, with the arguments they need (session ``s1``)
COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["logs", "s1"],
    ["kill", "s1"],
    ["attach", "s1"],
    ["download", "s1"],
    ["extend", "s1", "10m"],
    ["apply", "s1"],
    ["cleanup", "--all"],
    ["run", "--backend", "local", "--no-isolation", "--prompt", "hello"],
    # local mode
    ["presence"],
    ["groups"],
    ["messages", "list"],
    ["worktree", "list"],
    ["discover"],
    ["master", "status"],
]
#: commands that must write (run creates a row; kill ends the interrupted s1; forget deletes)
WRITERS = [
    ["run", "--backend", "local", "--no-isolation", "--prompt", "hello"],
    ["kill", "s1"],
    ["attach", "s1"],
]


@pytest.fixture(autouse=True)
def _set_broken_database_aside(isolated_env):
    """After a test that broke ``state.db`` on purpose, move it aside: the shared teardown
    (which ends this home's local agents) reads the database."""
    yield
    db = isolated_env / "state.db"
    if not db.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.Error:
        for p in isolated_env.glob("state.db*"):
            p.rename(p.with_name(p.name + ".broken"))


def interrupted_row(home: Path, repo: Path) -> None:
    """Session ``s1``: packing, started by a process that is gone (a real, reaped child)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    store = SessionStore(home / "state.db")
    s = store.create_session(
        name="s1", mode="sandbox", backend="local", repo=str(repo), branch="sandboxrun/s1",
        worktree=str(repo / ".worktrees" / "s1"), starter_pid=child.pid, starter_start=None,
    )  # fmt: skip
    store.set_status(s.id, Status.PACKING)
    store.close()


def assert_fault(proc: subprocess.CompletedProcess, *words: str) -> tuple[str, str]:
    """One ``Error:``/``Hint:`` naming the fault, exit 1, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    message, hint = edge_error(proc.stderr)
    assert hint, proc.stderr
    for word in words:
        assert word in message + " " + hint, (word, proc.stderr)
    return message, hint


# -- pure classification -----------------------------------------------------------------------


def test_db_fault_kinds_from_real_sqlite_errors(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(sqlite3.DatabaseError) as corrupt:
        sqlite3.connect(garbage).execute("SELECT 1 FROM sqlite_master").fetchall()
    assert db_fault(corrupt.value, garbage).kind == "corrupt"

    db = tmp_path / "ok.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(db, timeout=0).execute("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    fault = db_fault(locked.value, db, waited=0.5)
    assert fault.kind == "locked" and "waited 0.5s" in fault.message and "fuser" in fault.hint

    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as readonly:
        ro.execute("INSERT INTO t VALUES (1)")
    assert db_fault(readonly.value, db).kind == "readonly"

    with pytest.raises(sqlite3.OperationalError) as cantopen:
        sqlite3.connect(tmp_path / "no" / "such" / "dir.db")
    assert db_fault(cantopen.value, tmp_path / "no" / "such" / "dir.db").kind == "cantopen"

    # not faults: our own mistakes and constraint violations stay what they are
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as missing:
        conn.execute("SELECT * FROM nowhere")
    assert db_fault(missing.value, db) is None
    conn.execute("CREATE TABLE u (x UNIQUE)")
    conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        conn.execute("INSERT INTO u VALUES (1)")
    assert db_fault(dup.value, db) is None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, "full"),
        (errno.EDQUOT, "full"),
        (errno.EFBIG, "full"),
        (errno.EROFS, "readonly"),
        (errno.EACCES, "readonly"),
        (errno.EIO, "io"),
        (errno.ENOENT, None),
        (errno.EISDIR, None),
    ],
)
def test_disk_fault_kinds(code, kind):
    exc = OSError(code, os.strerror(code), "/data/artifacts/upload.tar.gz")
    fault = disk_fault(exc)
    if kind is None:
        assert fault is None
    else:
        assert fault.kind == kind and "/data/artifacts/upload.tar.gz" in fault.message
        assert fault.hint


def test_disk_fault_from_a_real_size_limit(tmp_path):
    """RLIMIT_FSIZE makes a real write fail with EFBIG (Python ignores SIGXFSZ)."""
    target = tmp_path / "big"
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from sandboxrun.faults import disk_fault\n"
        "try:\n"
        "    open(sys.argv[1], 'wb').write(b'x' * 100000)\n"
        "except OSError as exc:\n"
        "    f = disk_fault(exc)\n"
        "    print(f.kind, f.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.startswith("full cannot write a file: ") and "File too large" in out


# -- the CLI, one fault at a time ---------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_corrupt_database_every_command(cli, isolated_env, command):
    isolated_env.mkdir(parents=True)
    (isolated_env / "state.db").write_bytes(b"not sqlite at all\n" + os.urandom(8192))
    _, hint = assert_fault(cli(*command), "corrupt", "state.db")
    assert "mv " in hint and "broken" in hint


def test_corrupt_pages_in_a_real_database(cli, isolated_env, repo):
    """A valid header over damaged pages: met while reading rows, not at open."""
    interrupted_row(isolated_env, repo)
    store = SessionStore(isolated_env / "state.db")
    store.add_events(store.resolve("s1").id, [("stdout", {"line": "x" * 3000})] * 200)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = isolated_env / "state.db"
    data = bytearray(db.read_bytes())
    page = 4096
    for start in range(2 * page, len(data), page):  # every page but the header and schema
        data[start : start + 64] = os.urandom(64)
    db.write_bytes(bytes(data))
    for command in (["logs", "s1"], ["status"], ["kill", "s1"]):
        assert_fault(cli(*command), "corrupt")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_a_database_another_version_made_every_command(cli, isolated_env, command):
    """Tables that do not match the migrations recorded (a development build's renumbered
    migrations, seen on a real machine): an error naming the file and the way out, no
    traceback, and the file left as it was."""
    isolated_env.mkdir(parents=True)
    db = isolated_env / "state.db"
    SessionStore(db).close()
    conn = sqlite3.connect(db)
    with conn:  # the columns stay, the record of the migration that added them goes
        conn.execute("DELETE FROM _sqlite_migrations WHERE name LIKE 'm004%'")
    conn.close()
    before = db.read_bytes()
    message, hint = assert_fault(cli(*command), "state.db", "another version")
    assert "duplicate column" in message
    assert "mv " in hint and "broken" in hint
    assert db.read_bytes() == before


def hold_lock(db: Path, mode: str) -> subprocess.Popen:
    """Another process holding ``db``'s write lock (or, ``exclusive``, all access) until killed."""
    pragma = "PRAGMA locking_mode = EXCLUSIVE;" if mode == "exclusive" else ""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        f"c.executescript('{pragma}')\n"
        "c.execute('BEGIN EXCLUSIVE'); c.execute('UPDATE sessions SET name = name')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", WRITERS, ids=lambda c: " ".join(c))
def test_locked_database_writers(cli, isolated_env, repo, command):
    interrupted_row(isolated_env, repo)
    holder = hold_lock(isolated_env / "state.db", "write")
    try:
        # readers go on (WAL): status still works while another process writes
        assert cli("status", "--all").returncode == 0
        proc = cli(*command, env={"SANDBOXRUN_DB_LOCK_TIMEOUT": "0.5"})
        assert_fault(proc, "locked", "waited 0.5s", "fuser")
    finally:
        holder.kill()
        holder.wait()
    # once the lock is gone the same command works (the row was not half-changed)
    assert SessionStore(isolated_env / "state.db").resolve("s1").status == Status.PACKING


def test_exclusively_locked_database_readers(cli, isolated_env, repo):
    interrupted_row(isolated_env, repo)
    holder = hold_lock(isolated_env / "state.db", "exclusive")
    try:
        for command in (["status"], ["logs", "s1"], ["presence"]):
            assert_fault(cli(*command, env={"SANDBOXRUN_DB_LOCK_TIMEOUT": "0.3"}), "locked")
    finally:
        holder.kill()
        holder.wait()


@contextlib.contextmanager
def mounted(kind: str, target: Path, **opts: str):
    """A real mount (root only): ``tmpfs`` of a size, or a read-only bind of ``target``."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind needs root (CAP_SYS_ADMIN)")
    if kind == "tmpfs":
        argv = ["mount", "-t", "tmpfs", "-o", f"size={opts['size']}", "tmpfs", str(target)]
        res = subprocess.run(argv, capture_output=True, text=True)
    else:
        res = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True,
                             text=True)  # fmt: skip
        if res.returncode == 0:
            res = subprocess.run(["mount", "-o", "remount,ro,bind", str(target)],
                                 capture_output=True, text=True)  # fmt: skip
            if res.returncode != 0:
                subprocess.run(["umount", str(target)], check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount here: {res.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(path: Path, chunk: int) -> None:
    """Write to ``path`` until the disk refuses (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def test_full_disk(cli, isolated_env, repo):
    """``SANDBOXRUN_HOME`` on a real tmpfs filled to the last byte."""
    isolated_env.mkdir(parents=True)
    with mounted("tmpfs", isolated_env, size="4m"):
        interrupted_row(isolated_env, repo)
        filler = isolated_env / "filler"
        fill(filler, 65536)
        fill(isolated_env / "filler-tail", 1)  # the last bytes, one at a time
        for command in WRITERS:
            _, hint = assert_fault(cli(*command), "full", "df -h")
            assert "cleanup" in hint
        # reading may need a little space too (WAL's shared-memory file): works, or says so
        proc = cli("status", "--all")
        if proc.returncode:
            assert_fault(proc, "df -h")
        filler.unlink()
        (isolated_env / "filler-tail").unlink()
        # with space again, the same store works and nothing was half-written
        assert cli("kill", "s1").returncode == 0


def test_upload_bigger_than_the_disk_allows(cli, repo, isolated_env):
    """The upload tarball hits a real size limit (RLIMIT_FSIZE: EFBIG) while packing."""
    # incompressible, each file under the limit (git, which does not ignore SIGXFSZ, writes
    # them one by one), the upload over it
    for i in range(6):
        (repo / f"blob{i}.bin").write_bytes(os.urandom(600 << 10))
    from sbr_testlib import git

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "blob")
    limit = 1 << 20

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "sandboxrun", "run", "--backend", "local", "--no-isolation",
         "--name", "big", "--prompt", "hello"],
        cwd=repo, env=cli.env(), capture_output=True, text=True, timeout=300,
        preexec_fn=limited,
    )  # fmt: skip
    message, _ = assert_fault(proc, "full", "upload")
    row = cli.status("big")
    assert row["status"] == "failed" and "full" in row["error"]
    # nothing of the upload is left behind
    assert not list((isolated_env / "artifacts").rglob("*upload.tar*"))


def test_read_only_mount(cli, isolated_env, repo):
    """``SANDBOXRUN_HOME`` on a real read-only mount (even root cannot write there)."""
    interrupted_row(isolated_env, repo)
    SessionStore(isolated_env / "state.db").conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with mounted("bind", isolated_env):
        for command in WRITERS:
            proc = cli(*command)
            assert_fault(proc, "SANDBOXRUN_HOME")
            assert "read-only" in proc.stderr or "cannot be opened" in proc.stderr, proc.stderr
        for command in (["status"], ["logs", "s1"]):
            proc = cli(*command)
            assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
            if proc.returncode:
                edge_error(proc.stderr)


def _interpreter_for(user: str) -> list[str] | None:
    """An interpreter of this Python version that ``user`` can run, with what it needs to find
    sandboxrun and its dependencies (this one may live under /root, unreadable to others)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        try:
            probe = subprocess.run([candidate, "-c", "import sqlite3"], user=user,
                                   capture_output=True, check=False)  # fmt: skip
        except (PermissionError, FileNotFoundError):
            continue
        if probe.returncode == 0:
            return [candidate]
    return None


def test_read_only_files_as_an_ordinary_user(tmp_path, repo):
    """chmod'ed files stop an ordinary user (root ignores permissions, so run as ``tuser``)."""
    import pwd
    import sysconfig

    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    try:
        user = pwd.getpwnam("tuser")
    except KeyError:
        pytest.skip("no ordinary user 'tuser' on this machine")
    python = _interpreter_for("tuser")
    if python is None:
        pytest.skip(f"tuser can run no python{sys.version_info.major}.{sys.version_info.minor}")
    base = Path(subprocess.run(["mktemp", "-d", "/tmp/sbr-ro-XXXXXX"], capture_output=True,
                               text=True, check=True).stdout.strip())  # fmt: skip
    try:
        base.chmod(0o755)
        home = base / "home"
        interrupted_row(home, repo)
        SessionStore(home / "state.db").conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for p in [home, *home.iterdir()]:  # the user's own files, made read-only
            os.chown(p, user.pw_uid, user.pw_gid)
            p.chmod(0o444)
        home.chmod(0o555)
        env = {k: v for k, v in os.environ.items() if k not in ("HOME",)}
        project = Path(__file__).resolve().parent.parent
        env.update(SANDBOXRUN_HOME=str(home), HOME=str(base),
                   PYTHONPATH=f"{project}:{sysconfig.get_paths()['purelib']}")  # fmt: skip
        for command in (["kill", "s1"], ["attach", "s1"], ["status"]):
            proc = subprocess.run([*python, "-m", "sandboxrun", *command], cwd=base, env=env,
                                  user="tuser", capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
            if command == ["status"] and proc.returncode == 0:
                continue  # reading a read-only database may work
            message, hint = assert_fault(proc, "state.db")
            assert "read-only" in message or "cannot be opened" in message, proc.stderr
            assert "chmod" in hint or "writable" in hint
        # nothing was changed behind the error
        assert SessionStore(home / "state.db").resolve("s1").status == Status.PACKING
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# -- relative SANDBOXRUN_HOME -------------------------------------------------------------------


def test_relative_home_is_made_absolute_once(tmp_path, monkeypatch):
    from sandboxrun.config import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOXRUN_HOME", "rel/home")
    settings = load_settings()
    assert settings.home == tmp_path / "rel" / "home"
    # every process started from here on (driver, agents, hooks) gets the same directory
    assert os.environ["SANDBOXRUN_HOME"] == str(tmp_path / "rel" / "home")
    # an explicit env mapping is read, never written back
    env = {"SANDBOXRUN_HOME": "other"}
    assert load_settings(env=env).home == tmp_path / "other" and env["SANDBOXRUN_HOME"] == "other"


@pytest.mark.slow
@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_relative_home_local_run(cli, repo, tmp_path, detach):
    env = {"SANDBOXRUN_HOME": "../rel-home"}
    args = ["run", "--backend", "local", "--no-isolation", "--name", "rel",
            "--prompt", "@write out.txt hi\n@commit add out"]  # fmt: skip
    proc = cli(*args, *(["--detach"] if detach else []), env=env)
    assert proc.returncode == 0, proc.stderr
    home = tmp_path / "rel-home"

    def ended():
        row = cli.json("status", "rel", env=env)[0]
        return row if row["status"] not in ("created", "packing", "provisioning", "running",
                                             "collecting") else None  # fmt: skip

    row = retry_until(ended, timeout=120)
    assert row["status"] == "completed", row
    assert (home / "state.db").exists() and (home / "artifacts" / row["id"]).is_dir()


# -- the hook and the MCP server ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["corrupt", "locked"])
def test_hook_never_breaks_the_agent(isolated_env, repo, fault):
    hook = Path(sys.executable).parent / "sandboxrun-hook"
    isolated_env.mkdir(parents=True, exist_ok=True)
    holder = None
    if fault == "corrupt":
        (isolated_env / "state.db").write_bytes(os.urandom(8192))
    else:
        interrupted_row(isolated_env, repo)
        holder = hold_lock(isolated_env / "state.db", "exclusive")
    try:
        payload = {"session_id": "c1", "cwd": str(repo), "hook_event_name": "SessionStart"}
        proc = subprocess.run(
            [str(hook), "SessionStart"], input=json.dumps(payload), capture_output=True,
            text=True, timeout=60,
            env={**os.environ, "SANDBOXRUN_HOOK_LOCK_TIMEOUT": "0.3"},
        )  # fmt: skip
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc
    logged = (isolated_env / "logs" / "hook.log").read_text()
    assert fault in logged and "state.db" in logged, logged


def test_mcp_tool_names_the_fix(isolated_env, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "mcp"))
    from mcptest_lib import Tools, coord_for
    from sbr_testlib import git

    proj = tmp_path / "proj"
    proj.mkdir()
    git(proj, "init", "-q", "-b", "main")
    git(proj, "commit", "-q", "--allow-empty", "-m", "init")
    isolated_env.mkdir(parents=True)
    (isolated_env / "state.db").write_bytes(os.urandom(8192))
    text = Tools(coord_for(proj, "backend")).error("get_presence")
    assert "corrupt" in text and "Fix:" in text and "Traceback" not in text


def test_state_error_is_a_sandboxrun_error():
    from sandboxrun.errors import SandboxrunError

    assert issubclass(StateError, SandboxrunError) and StateError("x").exit_code == 1


def test_sigxfsz_is_ignored_by_python():
    """The size-limit tests rely on it: the write fails with EFBIG instead of a signal."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
