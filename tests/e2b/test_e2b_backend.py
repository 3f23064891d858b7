"""The e2b backend against the loopback emulator: the Sandbox contract, errors and retries."""

from __future__ import annotations

import io
import os
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandboxrun.config import Settings
from sandboxrun.errors import (
    AgentError,
    AuthError,
    BackendError,
    SandboxLostError,
    UnsafeArchiveError,
)
from sandboxrun.sandbox.backends.base import Launch
from sandboxrun.sandbox.backends.e2b import (
    CLAUDE_CODE_VERSION,
    INLINE_READ_LIMIT,
    E2BBackend,
    claude_template,
)

SECRET = "sk-ant-test-secret-value-0123456789"
CTL = "/home/user/.sandboxrun"


@pytest.fixture
def backend(emulator, monkeypatch, tmp_path):
    """An E2BBackend with quick retries, and a Claude key in the environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    return E2BBackend(Settings(home=tmp_path / "home"), retry_delays=(0.05, 0.1, 0.2))


@pytest.fixture
def sandbox(backend):
    sb = backend.create("sess-1", timeout_s=120, env={"SBR_TEST": "1"}, metadata={"k": "v"})
    yield sb
    sb.destroy()


def _detach(sb, argv, **kw):
    paths = {
        "stdin_path": f"{CTL}/prompt.txt",
        "log_path": f"{CTL}/agent.log",
        "stderr_path": f"{CTL}/agent.stderr",
        "exit_path": f"{CTL}/agent.exit",
        "pid_path": f"{CTL}/agent.pid",
    }
    if not kw.pop("keep_stdin", False):
        sb.write_file(paths["stdin_path"], b"the prompt\n")
    return sb.start_detached(
        Launch(tuple(argv), cwd=kw.pop("cwd", sb.home), env=kw.pop("env", {}), **paths)
    )


def _wait_for(fn, timeout=60.0):
    """Poll ``fn`` until truthy (the deadline is a hang guard: a loaded machine is slow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _read_or_none(sb, path: str) -> bytes | None:
    try:
        return sb.read_file(path)
    except FileNotFoundError:
        return None


def _tarball(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tuple):
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
            else:
                tf.addfile(member)
    return path


def test_check_ready_names_the_key_and_local(monkeypatch, tmp_path):
    """Without E2B_API_KEY the backend says which variable to set and the local fallback."""
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(BackendError) as err:
        E2BBackend(Settings(home=tmp_path)).check_ready(dry_run=False)
    assert "E2B_API_KEY" in err.value.message and "--backend local" in err.value.hint


def test_agent_env_needs_credentials_unless_dry_run(monkeypatch, tmp_path):
    """No Claude credentials: an error before anything is created, except for --dry-run."""
    for var in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    backend = E2BBackend(Settings(home=tmp_path))
    with pytest.raises(AgentError) as err:
        backend.agent_env(dry_run=False)
    assert "ANTHROPIC_API_KEY" in err.value.hint and "CLAUDE_CODE_OAUTH_TOKEN" in err.value.hint
    assert backend.agent_env(dry_run=True) == {"IS_SANDBOX": "1"}
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", "tok")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    env = backend.agent_env(dry_run=False)
    assert env == {
        "CLAUDE_CODE_OAUTH_TOKEN": "tok",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "IS_SANDBOX": "1",
    }


def test_create_passes_env_and_metadata_but_no_secret_in_metadata(backend, emulator):
    """Env vars reach commands; metadata carries the session id and never a secret."""
    sb = backend.create(
        "sess-9", timeout_s=60, env=backend.agent_env(dry_run=False), metadata={"repo": "project"}
    )
    assert sb.home == "/home/user" and sb.repo_dir == "/home/user/repo"
    assert sb.exec(["sh", "-c", 'printf %s "$ANTHROPIC_API_KEY"']).stdout == SECRET.encode()
    meta = emulator.sandbox(sb.id).metadata
    assert meta == {"repo": "project", "sandboxrun_session": "sess-9"}
    assert SECRET not in repr(meta)
    sb.destroy()


def test_exec_is_byte_exact_and_never_interprets_argv(sandbox):
    """Output bytes survive; argv with shell syntax is passed literally."""
    res = sandbox.exec(["sh", "-c", "printf '\\377\\000x'; printf 'e\\n' >&2; exit 3"])
    assert (res.exit_code, res.stdout, res.stderr) == (3, b"\xff\x00x", b"e\n")
    tricky = ["$(touch /home/user/pwned)", "a b", "'q'", "`id`", "x;y", "*"]
    assert sandbox.exec(["printf", "%s\\n", *tricky]).stdout.decode().splitlines() == tricky
    assert not sandbox.exec(["test", "-e", "/home/user/pwned"]).ok
    res = sandbox.exec(["sh", "-c", 'pwd; printf %s "$SBR_TEST$X"'], cwd="/tmp", env={"X": "2"})
    assert res.stdout == b"/tmp\n12"
    res = sandbox.exec(["no-such-program"])
    assert res.exit_code == 127 and b"not found" in res.stderr


def test_exec_timeout(sandbox):
    """A command over its timeout becomes a BackendError saying so."""
    with pytest.raises(BackendError, match="did not finish within 1s"):
        sandbox.exec(["sleep", "5"], timeout=1)


def test_read_file_by_offset_neither_loses_nor_repeats(sandbox, emulator):
    """Polling by offset returns exactly the new bytes, and nothing when nothing is new."""
    log = f"{CTL}/agent.log"
    with pytest.raises(FileNotFoundError):
        sandbox.read_file(log)
    with pytest.raises(FileNotFoundError):
        sandbox.read_file(log, 10)
    sandbox.write_file(log, b"one\n")
    got, offset = b"", 0
    for piece in (b"two\n", b"three \xe2\x82", b"\xac\n"):  # a UTF-8 char split in two
        chunk = sandbox.read_file(log, offset)
        got, offset = got + chunk, offset + len(chunk)
        with open(emulator.host_path(sandbox.id, log), "ab") as fh:
            fh.write(piece)
    got += sandbox.read_file(log, offset)
    assert got == b"one\ntwo\nthree \xe2\x82\xac\n"
    assert sandbox.read_file(log, len(got)) == b""
    downloads = emulator.stats["downloads"]
    sandbox.read_file(log, len(got))
    assert emulator.stats["downloads"] == downloads  # an empty poll downloads nothing


def test_read_file_big_delta_goes_through_a_file(sandbox, emulator):
    """A delta over the inline limit is cut in the sandbox and downloaded, then cleaned up."""
    path = f"{CTL}/big.log"
    data = os.urandom(INLINE_READ_LIMIT + 12345)
    sandbox.write_file(path, data)
    assert sandbox.read_file(path, 7) == data[7:]
    assert sandbox.read_file(path) == data
    leftovers = sandbox.exec(["sh", "-c", "ls /tmp | grep -c sandboxrun-read- || true"])
    assert leftovers.stdout.strip() == b"0"


@pytest.mark.parametrize("compression,mode", [("gzip", "w:gz"), ("none", "w")])
def test_upload_and_unpack(sandbox, emulator, tmp_path, compression, mode):
    """The tarball arrives, unpacks into dest, and is removed afterwards."""
    tb = _tarball(tmp_path / "up.tar", [("src/a.py", b"print(1)\n"), ("README", b"hi\n")], mode)
    sandbox.upload_and_unpack(tb, compression, sandbox.repo_dir)
    repo = emulator.host_path(sandbox.id, sandbox.repo_dir)
    assert (repo / "src" / "a.py").read_bytes() == b"print(1)\n"
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith("sandboxrun-upload-")
    ]


def test_upload_and_unpack_zstd(sandbox, emulator, tmp_path):
    """zstd archives unpack too (the template has zstd)."""
    import subprocess

    plain = _tarball(tmp_path / "up.tar", [("z.txt", b"zstd!\n")], "w")
    subprocess.run(["zstd", "-q", "-f", str(plain), "-o", str(tmp_path / "up.tar.zst")], check=True)
    sandbox.upload_and_unpack(tmp_path / "up.tar.zst", "zstd", sandbox.repo_dir)
    assert emulator.host_path(sandbox.id, f"{sandbox.repo_dir}/z.txt").read_bytes() == b"zstd!\n"


def _symlink(name="link", target="/etc/passwd"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _hardlink():
    info = tarfile.TarInfo("hard")
    info.type, info.linkname = tarfile.LNKTYPE, "README"
    return info


def _fifo():
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    "bad",
    [
        _symlink,
        _hardlink,
        _fifo,
        lambda: ("/abs/evil", b"x"),
        lambda: ("../escape", b"x"),
        lambda: ("a/../../escape", b"x"),
        lambda: (".git/hooks/post-checkout", b"#!/bin/sh\n"),
        lambda: ("sub/.git/config", b"x"),
        lambda: (".GIT/config", b"x"),
    ],
    ids=[
        "symlink",
        "hardlink",
        "fifo",
        "absolute",
        "dotdot",
        "nested-dotdot",
        "git",
        "subgit",
        "GIT-uppercase",
    ],
)
def test_malicious_tarball_is_refused_before_extracting(sandbox, emulator, tmp_path, bad):
    """Links, special files, absolute, `..` and `.git` members: nothing is extracted."""
    tb = _tarball(tmp_path / "bad.tar.gz", [("README", b"ok\n"), bad()])
    with pytest.raises(UnsafeArchiveError):
        sandbox.upload_and_unpack(tb, "gzip", sandbox.repo_dir)
    assert not emulator.host_path(sandbox.id, sandbox.repo_dir).exists()
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith("sandboxrun-upload-")
    ]


def test_big_archive_is_extracted_in_parallel_exactly(sandbox, emulator, tmp_path):
    """Over 500 members, one tar per CPU; odd names (dashes, spaces, newlines) come out whole.

    Names that look like tar options must stay names: a member called
    `--checkpoint-action=exec=...` is a file, not a command.
    """
    from sandboxrun.sandbox.backends.e2b import _UNPACK_SCRIPT

    tops = ["src", "src10", "-C", "--checkpoint-action=exec=touch PWNED", "sp ace", "new\nl",
            "ünï", ".github", "a*b", "back\\slash", "README"]  # fmt: skip
    files = {}
    tb = tmp_path / "big.tar.gz"
    with tarfile.open(tb, "w:gz") as tf:
        for i in range(600):
            top = tops[i % len(tops)]
            name = top if top == "README" else f"{top}/d{i % 7}/f{i}"
            files[name] = data = f"{name}:{i}".encode()  # README: the last one wins
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if i % 5 == 0 else 0o644
            tf.addfile(info, io.BytesIO(data))
    remote = sandbox.upload(tb)
    res = sandbox.exec(
        ["bash", "-x", "-c", _UNPACK_SCRIPT, "unpack", remote, sandbox.repo_dir, "gzip"]
    )
    assert res.ok, res.error_text()
    trace = res.stderr.decode()
    assert "--verbatim-files-from -T" in trace and "one pass" not in trace  # the parallel path
    repo = emulator.host_path(sandbox.id, sandbox.repo_dir)
    found = {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert found == files
    assert os.access(repo / "src" / "d0" / "f0", os.X_OK)
    assert (
        not (repo / "PWNED").exists()
        and not (emulator.host_path(sandbox.id, sandbox.home) / "PWNED").exists()
    )
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith(os.path.basename(remote))
    ]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_symlink_then_write_through_is_refused(sandbox, emulator, tmp_path, compression):
    """A symlink out of the tree, then a file "inside" it: refused before either is written."""
    import subprocess

    outside = f"{sandbox.home}/outside"  # a directory in the sandbox, outside the tree
    assert sandbox.exec(["mkdir", outside]).ok
    members = [("README", b"ok\n"), _symlink("l", outside), ("l/pwned", b"x")]
    tb = _tarball(tmp_path / "bad.tar", members, "w")
    if compression == "gzip":
        tb = _tarball(tmp_path / "bad.tar.gz", members, "w:gz")
    elif compression == "zstd":
        subprocess.run(["zstd", "-q", "-f", str(tb), "-o", f"{tb}.zst"], check=True)
        tb = Path(f"{tb}.zst")
    with pytest.raises(UnsafeArchiveError, match="links or special files"):
        sandbox.upload_and_unpack(tb, compression, sandbox.repo_dir)
    assert list(emulator.host_path(sandbox.id, outside).iterdir()) == []
    assert not emulator.host_path(sandbox.id, sandbox.repo_dir).exists()
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith("sandboxrun-upload-")
    ]


def test_member_hidden_from_python_tarfile_is_still_refused(sandbox, emulator, tmp_path):
    """The check is GNU tar's own listing, not a second parser that could disagree with it.

    A header with a bad checksum ends the archive for Python's tarfile, while GNU tar skips to
    the next header and would extract the symlink behind it: checking with tarfile before the
    upload would miss it.
    """
    plain = _tarball(tmp_path / "p.tar", [("README", b"ok\n"), ("x", b"y"), _symlink()], "w")
    raw = bytearray(plain.read_bytes())
    raw[1024 + 148 : 1024 + 156] = b"0000000\0"  # the second header's checksum
    bad = tmp_path / "hidden.tar"
    bad.write_bytes(bytes(raw))
    with tarfile.open(bad) as tf:
        assert tf.getnames() == ["README"]  # tarfile stops there
    with pytest.raises((UnsafeArchiveError, BackendError)):
        sandbox.upload_and_unpack(bad, "none", sandbox.repo_dir)
    assert not emulator.host_path(sandbox.id, sandbox.repo_dir).exists()
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith("sandboxrun-upload-")
    ]


def test_corrupt_archive_fails_without_extracting(sandbox, emulator, tmp_path):
    """A truncated gzip fails in decompression, before anything lands; nothing is left over."""
    good = _tarball(tmp_path / "a.tar.gz", [(f"f{i}", os.urandom(5000)) for i in range(20)])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BackendError, match="cannot decompress"):
        sandbox.upload_and_unpack(cut, "gzip", sandbox.repo_dir)
    assert not emulator.host_path(sandbox.id, sandbox.repo_dir).exists()
    assert not [
        p
        for p in os.listdir(emulator.host_path(sandbox.id, "/tmp"))
        if p.startswith("sandboxrun-upload-")
    ]


def test_baseline_script_commits_exactly_the_tree(sandbox, emulator, tmp_path):
    """The runner's baseline (blobs in a pack, trees by fast-import) equals a plain commit."""
    from sandboxrun.sandbox.provision import BASELINE_SCRIPT

    names = [
        "plain.txt",
        "with space.txt",
        " leading space",
        "tab\there",
        "new\nline",
        'quo"te',
        '"starts-with-quote',
        "back\\slash",
        "ünïcödé.txt",
        "M 100644 0000000000000000000000000000000000000000 fake",
        "dir with space/inner file",
        "a/b/c/deep.py",
        "empty",
        "one",
    ]
    members = [(n, b"" if n == "empty" else b"1" if n == "one" else n.encode() * 3) for n in names]
    tb = tmp_path / "names.tar.gz"
    with tarfile.open(tb, "w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        exe = tarfile.TarInfo("run.sh")
        exe.size, exe.mode = 10, 0o755
        tf.addfile(exe, io.BytesIO(b"#!/bin/sh\n"))
    sandbox.upload_and_unpack(tb, "gzip", sandbox.repo_dir)
    res = sandbox.exec(["sh", "-c", BASELINE_SCRIPT, "sh", sandbox.repo_dir])
    assert res.ok, res.error_text()
    head = res.text().strip().splitlines()[-1]
    check = sandbox.exec(
        [
            "sh",
            "-c",
            'cd "$1" && git status --porcelain && find .git/objects -path "*/??/*" -type f '
            "| sed 's|.*/\\(..\\)/|\\1|' | git cat-file --batch-check='%(objecttype)' "
            "| grep -c blob "
            '&& git log --format="%an|%cn|%s" && git rev-parse "HEAD^{tree}" '
            "&& cp -r . ../copy && cd ../copy && rm -rf .git && git init -q && git add -A "
            "&& git write-tree",
            "sh",
            sandbox.repo_dir,
        ]
    )
    assert check.ok, check.error_text()
    lines = check.text().splitlines()
    loose_blobs, log, tree, plain_tree = lines  # no status lines: the tree is clean
    assert int(loose_blobs) <= 2  # only the 0- and 1-byte files are not in the pack
    assert log == "Claude (sandboxrun)|Claude (sandboxrun)|sandboxrun baseline"
    assert tree == plain_tree
    assert len(head) == 40


def test_start_detached_survives_and_writes_exit_file(sandbox, backend, emulator):
    """The agent runs on after start_detached returns; stdio and exit code land in files."""
    # It ends only once the test opens its gate (a sleep would race the checks below).
    gate = f"{sandbox.home}/go"
    script = (
        f'cat; echo "env=$SBR_AGENT_ENV"; echo oops >&2; '
        f"until [ -e {gate} ]; do sleep 0.05; done; exit 7"
    )
    pgid = _detach(sandbox, ["sh", "-c", script], env={"SBR_AGENT_ENV": "yes"})
    pid_file = sandbox.read_file(f"{CTL}/agent.pid")
    assert int(pid_file) == pgid
    assert sandbox.signal_group(pgid, "0")  # still running after our command returned
    with pytest.raises(FileNotFoundError):
        sandbox.read_file(f"{CTL}/agent.exit")
    sandbox.write_file(gate, b"")
    # a different client (another process, after a crash) sees the same sandbox
    other = E2BBackend(backend.settings).connect(sandbox.id)
    exit_code = _wait_for(lambda: _exit_code(other))
    assert exit_code == b"7\n"
    assert other.read_file(f"{CTL}/agent.log") == b"the prompt\nenv=yes\n"
    assert other.read_file(f"{CTL}/agent.stderr") == b"oops\n"
    assert _wait_for(lambda: not other.signal_group(pgid, "0"))


def _exit_code(sb):
    try:
        return sb.read_file(f"{CTL}/agent.exit")
    except FileNotFoundError:
        return None


def test_signal_group_kills_the_whole_group(sandbox):
    """KILL to the group takes the agent's children down too; then the group is gone."""
    pgid = _detach(sandbox, ["sh", "-c", "sleep 300 & sleep 301 & wait"])
    _wait_for(lambda: b"sleep 301" in sandbox.exec(["ps", "-eo", "args"]).stdout)
    assert sandbox.signal_group(pgid, "KILL")
    _wait_for(lambda: b"sleep 30" not in sandbox.exec(["ps", "-eo", "args"]).stdout)
    assert _wait_for(lambda: not sandbox.signal_group(pgid, "0"))
    assert sandbox.signal_group(pgid, "TERM") is False


def test_interrupt_lets_the_wrapper_record_the_exit(sandbox):
    """INT stops the agent while the wrapper survives to write the exit code."""
    script = "trap 'exit 130' INT; echo trapped; while :; do sleep 0.1; done"
    pgid = _detach(sandbox, ["sh", "-c", script])
    # Signal once the trap is set (it says so in its log), not after a guessed delay.
    _wait_for(lambda: _read_or_none(sandbox, f"{CTL}/agent.log") == b"trapped\n")
    assert sandbox.signal_group(pgid, "INT")
    assert _wait_for(lambda: _exit_code(sandbox)) == b"130\n"


def test_missing_claude_is_an_agent_error(sandbox, emulator):
    """No `claude` in the template: a clear error naming the template build."""
    with pytest.raises(AgentError) as err:
        _detach(sandbox, ["claude", "-p"])
    assert "sandboxrun template build" in err.value.hint
    emulator.set_claude("/bin/true")
    assert _detach(sandbox, ["claude", "-p"]) > 0


def test_set_timeout_and_time_left(sandbox, emulator):
    """set_timeout moves the sandbox's end, up or down; time_left reads that end back."""
    for seconds in (600, 30):
        before = time.time()
        sandbox.set_timeout(seconds)
        after = time.time()
        end = emulator.sandbox(sandbox.id).end_at
        assert before + seconds <= end <= after + seconds  # set during the call
        before = time.time()
        left = sandbox.time_left()
        after = time.time()
        # E2B reports the end to the second: allow that rounding, nothing for speed.
        assert end - after - 1 <= left <= end - before + 1


def test_expired_sandbox_is_lost(sandbox, backend, emulator):
    """After E2B ends the sandbox every call says it is lost; destroy stays quiet."""
    assert sandbox.is_alive()
    emulator.expire(sandbox.id)
    assert sandbox.is_alive() is False
    with pytest.raises(SandboxLostError):
        sandbox.exec(["true"])
    with pytest.raises(SandboxLostError):
        sandbox.read_file(f"{CTL}/agent.log", 5)
    with pytest.raises(SandboxLostError):
        sandbox.time_left()
    with pytest.raises(SandboxLostError):
        backend.connect(sandbox.id)
    sandbox.destroy()
    sandbox.destroy()


def test_unreachable_control_plane_is_not_lost(sandbox, emulator):
    """When E2B keeps failing (503), is_alive cannot tell and does not declare the sandbox lost."""
    emulator.fail_control_plane(1000, status=503)
    assert sandbox.is_alive() is True
    with pytest.raises(BackendError, match="cannot reach"):
        sandbox.time_left()
    emulator.reset()


def test_wrong_key_is_an_auth_error(backend, monkeypatch):
    """A rejected key names E2B_API_KEY and never shows its value."""
    monkeypatch.setenv("E2B_API_KEY", "e2b_wrong_key_value_42")
    with pytest.raises(AuthError) as err:
        backend.create("s", timeout_s=60, env={}, metadata={})
    assert "E2B_API_KEY" in err.value.message
    assert "e2b_wrong_key_value_42" not in f"{err.value.message} {err.value.hint}"


def test_rate_limits_are_retried_then_reported(backend, emulator):
    """429s beyond the SDK's own retries are retried with backoff; endless ones explained."""
    emulator.fail_control_plane(5, status=429)
    sb = backend.create("s", timeout_s=60, env={}, metadata={})
    assert sb.is_alive()
    assert len(emulator.sandbox_ids()) == 1  # the idempotency key kept it to one sandbox
    emulator.fail_control_plane(1000, status=429)
    with pytest.raises(BackendError, match="rate-limiting") as err:
        backend.create("s2", timeout_s=60, env={}, metadata={})
    assert "fewer sandboxes" in err.value.hint


def test_no_space_on_upload(sandbox, emulator, tmp_path):
    """E2B's 507 on upload becomes a clear out-of-space error."""
    tb = _tarball(tmp_path / "up.tar.gz", [("a", b"x" * 1000)])
    emulator.fail_uploads(1)
    with pytest.raises(BackendError, match="ran out of disk space"):
        sandbox.upload_and_unpack(tb, "gzip", sandbox.repo_dir)


def test_missing_template_names_the_build_command(backend, emulator):
    """An unknown template points at `sandboxrun template build`."""
    emulator.templates = {"base"}
    with pytest.raises(BackendError, match="does not exist") as err:
        backend.create("s", timeout_s=60, env={}, metadata={})
    assert "sandboxrun template build" in err.value.hint


def test_too_long_timeout_is_explained(backend, emulator):
    """E2B's maximum lifetime is reported with the plan limits."""
    emulator.max_timeout = 3600
    try:
        with pytest.raises(BackendError, match="lifetime") as err:
            backend.create("s", timeout_s=3900, env={}, metadata={})
        assert "--timeout" in err.value.hint
    finally:
        emulator.max_timeout = 86_400


def test_unreachable_e2b_is_a_network_error(monkeypatch, tmp_path):
    """No answer from the API: a BackendError that says it cannot reach E2B."""
    monkeypatch.setenv("E2B_API_KEY", "e2b_x")
    monkeypatch.setenv("E2B_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")
    with pytest.raises(BackendError, match="cannot reach E2B"):
        E2BBackend(Settings(home=tmp_path), retry_delays=()).create(
            "s", timeout_s=60, env={}, metadata={}
        )


def test_secrets_never_in_error_messages(sandbox):
    """Even when a command echoes a secret, our own error messages mask it."""
    with pytest.raises(BackendError) as err:
        sandbox.upload_and_unpack(Path("/dev/null"), "bogus", sandbox.repo_dir)
    assert SECRET not in str(err.value)
    from sandboxrun.sandbox.backends.e2b import scrub

    assert scrub(f"key={SECRET}") == "key=***"


def test_five_sandboxes_in_parallel(backend):
    """Five sandboxes created and used at once from threads stay separate."""

    def work(i: int) -> bytes:
        sb = backend.create(f"p{i}", timeout_s=60, env={"N": str(i)}, metadata={})
        try:
            sb.write_file("/home/user/n", str(i).encode())
            return sb.exec(["sh", "-c", 'cat /home/user/n; printf " $N"']).stdout
        finally:
            sb.destroy()

    with ThreadPoolExecutor(5) as pool:
        assert list(pool.map(work, range(5))) == [f"{i} {i}".encode() for i in range(5)]


def test_template_definition():
    """The template installs git, zstd and the pinned Claude Code (offline check)."""
    from e2b import Template

    dockerfile = Template.to_dockerfile(claude_template())
    assert dockerfile.startswith("FROM node:22")
    assert f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}" in dockerfile
    assert "zstd" in dockerfile and "git" in dockerfile
    assert CLAUDE_CODE_VERSION in Template.to_json(claude_template())
