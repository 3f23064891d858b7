"""The E2B emulator, checked with the unmodified e2b SDK over real loopback HTTP."""

from __future__ import annotations

import io
import os
import time

import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    NotEnoughSpaceException,
    RateLimitException,
    Sandbox,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxQuery,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_create_run_files_info_list_kill(emulator):
    """The SDK's basic round trip works end to end."""
    sb = Sandbox.create(template="base", timeout=60, metadata={"who": "test"}, envs={"FOO": "b"})
    result = sb.commands.run("echo $FOO $HOME $USER; pwd; echo err >&2")
    assert result.stdout == "b /home/user user\n/home/user\n"
    assert result.stderr == "err\n"
    sb.files.write("/home/user/dir/file.txt", "hello")
    assert sb.files.read("/home/user/dir/file.txt") == "hello"
    assert sb.commands.run("cat dir/file.txt").stdout == "hello"
    assert emulator.host_path(sb.sandbox_id, "/home/user/dir/file.txt").read_text() == "hello"
    info = sb.get_info()
    assert info.metadata == {"who": "test"} and info.template_id == "base"
    listed = Sandbox.list(query=SandboxQuery(metadata={"who": "test"})).next_items()
    assert [s.sandbox_id for s in listed] == [sb.sandbox_id]
    assert Sandbox.list(query=SandboxQuery(metadata={"who": "else"})).next_items() == []
    assert sb.kill() is True
    assert sb.is_running() is False
    with pytest.raises(SandboxNotFoundException):
        sb.get_info()
    with pytest.raises(SandboxNotRunningException):
        sb.commands.run("true")


def test_home_is_private_to_each_sandbox(emulator):
    """/home/user means each sandbox's own directory, in commands and in file calls."""
    a = Sandbox.create(template="base")
    b = Sandbox.create(template="base")
    a.commands.run("echo from-a > /home/user/mine")
    assert a.files.read("/home/user/mine") == "from-a\n"
    with pytest.raises(FileNotFoundException):
        b.files.read("/home/user/mine")
    assert b.commands.run("ls -A /home/user").stdout == ""
    assert not os.path.exists("/home/user/mine")  # this machine's /home/user stays untouched
    # /tmp too is each sandbox's own, as in a VM
    a.commands.run(f"echo a > /tmp/{a.sandbox_id}")
    assert b.commands.run("ls -A /tmp").stdout == ""
    assert not os.path.exists(f"/tmp/{a.sandbox_id}")
    assert emulator.host_path(a.sandbox_id, f"/tmp/{a.sandbox_id}").read_text() == "a\n"
    # each sandbox sees only its own processes, as in a VM
    ps = a.commands.run("ps -e -o comm=").stdout.split()
    assert "python" in ps[0] or ps[0].startswith("python")  # its init
    assert len(ps) <= 4


def test_exit_codes_and_missing_files(emulator):
    """Non-zero exits and missing files map to the SDK's own exceptions."""
    sb = Sandbox.create(template="base")
    with pytest.raises(CommandExitException) as err:
        sb.commands.run("echo out; exit 3")
    assert err.value.exit_code == 3 and err.value.stdout == "out\n"
    with pytest.raises(FileNotFoundException):
        sb.files.read("/home/user/absent")
    assert sb.files.exists("/home/user") and not sb.files.exists("/home/user/absent")


def test_streamed_and_gzip_uploads(emulator):
    """File objects go up as a streamed octet-stream body, gzip bodies are inflated."""
    sb = Sandbox.create(template="base")
    payload = os.urandom(3 << 20)
    sb.files.write("/home/user/big.bin", io.BytesIO(payload))
    assert bytes(sb.files.read("/home/user/big.bin", format="bytes")) == payload
    sb.files.write("/home/user/z.txt", b"zipped", gzip=True)
    assert sb.files.read("/home/user/z.txt") == "zipped"


def test_background_command_connect_and_kill(emulator):
    """Background commands can be listed, reconnected to and killed by pid."""
    sb = Sandbox.create(template="base")
    handle = sb.commands.run("echo started; sleep 30", background=True, timeout=0)
    assert handle.pid in [p.pid for p in sb.commands.list()]
    again = sb.commands.connect(handle.pid, timeout=0)
    assert sb.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as err:
        again.wait()
    assert err.value.exit_code == -1
    assert sb.commands.list() == []


def _until(condition, timeout: float = 30) -> None:
    """Poll ``condition`` (a hang guard, not a speed claim: it is usually met at once)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_detached_process_survives_its_command(emulator):
    """A setsid'd child outlives the command that started it (the stream still ends)."""
    sb = Sandbox.create(template="base")
    # The child waits for a file only this test creates: if the command's stream waited for
    # it, run() would never return (and time out), so returning proves it did not.
    child = "while [ ! -e /home/user/go ]; do sleep 0.05; done; echo late > /home/user/late"
    sb.commands.run(f"setsid sh -c '{child}' >/dev/null 2>&1 &", timeout=30)
    assert not sb.files.exists("/home/user/late")
    sb.files.write("/home/user/go", "")
    _until(lambda: sb.files.exists("/home/user/late"))
    assert sb.files.read("/home/user/late") == "late\n"


def test_timeout_expiry_kills_everything(emulator):
    """set_timeout moves the end either way; past it the sandbox is deleted with every process
    in it."""
    sb = Sandbox.create(template="base", timeout=60)
    sb.commands.run("setsid sleep 300 >/dev/null 2>&1 &")
    init_pid = emulator.sandbox(sb.sandbox_id).init_pid
    host = emulator.sandbox(sb.sandbox_id).root
    before = time.time()
    sb.set_timeout(600)
    assert emulator.sandbox(sb.sandbox_id).end_at >= before + 600  # extended
    assert sb.is_running()
    sb.set_timeout(1)  # and shortened: E2B ends it once that passes
    _until(lambda: sb.sandbox_id not in emulator.sandbox_ids())
    with pytest.raises(SandboxNotFoundException):
        sb.get_info()
    _until(lambda: not _pid_alive(init_pid))  # killed right after it is forgotten
    emulator.settle()  # the files go in the background, as E2B answers before scrubbing
    assert not host.exists()


def test_lose_kills_processes(emulator):
    """lose() kills the namespace (detached processes included) and forgets the sandbox."""
    sb = Sandbox.create(template="base")
    sb.commands.run("setsid sleep 300 >/dev/null 2>&1 &")
    init_pid = emulator.sandbox(sb.sandbox_id).init_pid
    assert emulator.lose(sb.sandbox_id)
    assert not _pid_alive(init_pid)
    assert sb.is_running() is False


def test_commands_in_flight_when_lost_end_with_an_error_not_at_their_timeout(emulator):
    """Commands started while the sandbox is being destroyed (the window between destroy()
    telling the running ones and the namespace dying) end like the running ones: with an
    error, as a dropped VM's connection would, never left to the client's own timeout (60 s
    and more: a follower then stalls once per call)."""
    import threading

    sb = Sandbox.create(template="base")
    stop, outcomes = threading.Event(), []

    def keep_starting() -> None:
        while not stop.is_set():
            try:
                sb.commands.run("true", timeout=600, request_timeout=600)
            except Exception as exc:  # noqa: BLE001 - any error ends the loop, as lost should
                outcomes.append(type(exc).__name__)
                return

    threads = [threading.Thread(target=keep_starting, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # let commands be in flight at every stage when the sandbox goes
    assert emulator.lose(sb.sandbox_id)
    stop.set()
    for t in threads:
        t.join(timeout=120)  # a hang, not a speed, is what this detects (timeouts are 600 s)
    assert not any(t.is_alive() for t in threads), "a command outlived its lost sandbox"


def test_wrong_api_key_is_401(emulator):
    """A wrong key gets E2B's 401, which the SDK raises as AuthenticationException."""
    with pytest.raises(AuthenticationException):
        Sandbox.create(template="base", api_key="e2b_wrong")
    assert emulator.stats["auth_rejected"] >= 1


def test_unknown_template_is_404(emulator):
    """Creating from a template E2B does not know fails with its 404."""
    with pytest.raises(Exception, match="404"):
        Sandbox.create(template="no-such-template")


def test_rate_limit_injection(emulator):
    """Injected 429s are retried by the SDK, then surface as RateLimitException."""
    emulator.fail_control_plane(2, status=429)
    sb = Sandbox.create(template="base")  # the SDK's own retries absorb two
    assert sb.is_running()
    emulator.fail_control_plane(10, status=429)
    with pytest.raises(RateLimitException):
        Sandbox.create(template="base")


def test_no_space_injection(emulator):
    """An injected 507 on upload surfaces as NotEnoughSpaceException."""
    sb = Sandbox.create(template="base")
    emulator.fail_uploads(1)
    with pytest.raises(NotEnoughSpaceException):
        sb.files.write("/home/user/f", io.BytesIO(b"x" * 100_000))
    sb.files.write("/home/user/f", b"fine")
    assert sb.files.read("/home/user/f") == "fine"


def test_claude_on_path_is_optional(emulator, tmp_path):
    """`claude` resolves inside sandboxes only when the emulator is given one."""
    sb = Sandbox.create(template="base")
    assert sb.commands.run("command -v claude || echo none").stdout == "none\n"
    fake = tmp_path / "claude"
    fake.write_text('#!/bin/sh\necho fake-claude "$@"\n')
    fake.chmod(0o755)
    emulator.set_claude(fake)
    assert sb.commands.run("claude --version").stdout == "fake-claude --version\n"
    emulator.set_claude(None)
    with pytest.raises(CommandExitException):
        sb.commands.run("claude --version")


def test_idempotency_key_returns_the_same_sandbox(emulator):
    """A retried create with the same Idempotency-Key gets the same sandbox back."""
    a = Sandbox.create(template="base", idempotency_key="k-123")
    b = Sandbox.create(template="base", idempotency_key="k-123")
    assert a.sandbox_id == b.sandbox_id
    assert len(emulator.sandbox_ids()) == 1


def test_idempotency_key_holds_while_the_first_create_is_carried_out(emulator):
    """Retries that arrive while the create they repeat is still being carried out (a client
    that gave up on a slow answer, on a loaded machine) get its sandbox, never a second."""
    from concurrent.futures import ThreadPoolExecutor

    def create(_):
        return Sandbox.create(template="base", idempotency_key="k-concurrent").sandbox_id

    # starting a sandbox takes a while (a namespace and its init): the creates overlap
    with ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(create, range(4)))
    assert len(ids) == 1 and emulator.sandbox_ids() == list(ids)
    assert emulator.stats["create_served"] == 4


@pytest.mark.parametrize(
    ("userns", "shadow_home"),
    [(True, False), (True, True), (None, True)],
    ids=["user-namespace", "user-namespace-private-home", "default-private-home"],
)
def test_sandboxes_without_root_or_without_a_home_user_here(monkeypatch, userns, shadow_home):
    """A user namespace (how a non-root user runs it) and a private /home (how it runs where
    this machine has no /home/user) give sandboxes the same view as the default set-up."""
    from tests.e2b_emulator import E2BEmulator

    with E2BEmulator(userns=userns, shadow_home=shadow_home) as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        sb = Sandbox.create(template="base")
        out = sb.commands.run("id -u; pwd; echo hi > f; ls -A /home/user; ps -e -o comm=").stdout
        uid, cwd, listing, *procs = out.split()
        assert (uid, cwd, listing) == ("0", "/home/user", "f")
        assert len(procs) <= 3  # its own PID namespace: init, sh, ps
        assert emu.host_path(sb.sandbox_id, "/home/user/f").read_text() == "hi\n"
        assert (emu.sandbox(sb.sandbox_id).home / "f").read_text() == "hi\n"
        # What else lives in /home here stays visible in the sandbox (venvs, checkouts).
        others = sorted(n for n in os.listdir("/home") if n != "user")
        seen = sb.commands.run("ls -A /home").stdout.split()
        assert sorted(n for n in seen if n != "user") == others and "user" in seen
        sb.kill()
        assert emu.sandbox_ids() == []


def test_stall_holds_a_stream_mid_way_until_cleared(emulator):
    """`stall` with `stall_after` serves that many bytes of the answer, then nothing: the
    client sees a stream that stopped (no error, no end); clearing the faults drops it."""
    import threading

    sb = Sandbox.create(template="base")
    sb.files.write("/home/user/big.bin", os.urandom(200_000))
    fault = emulator.faults.add("download", "stall", seconds=None, stall_after=1000,
                                match="big.bin")  # fmt: skip
    got, ended = bytearray(), threading.Event()
    outcome: list[str] = []

    def read() -> None:
        try:
            with sb.files.read("/home/user/big.bin", format="stream") as chunks:
                for chunk in chunks:
                    got.extend(chunk)
            outcome.append("complete")
        except Exception as exc:  # noqa: BLE001 - the drop, as the SDK reports it
            outcome.append(type(exc).__name__)
        finally:
            ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while (len(got) < 1000 or emulator.faults.stalled < 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(got) == 1000 and emulator.faults.stalled == 1 and fault.hits == 1
    assert not ended.is_set()  # held: neither more bytes nor an end
    emulator.faults.clear()
    assert ended.wait(30) and outcome != ["complete"] and len(got) < 200_000
    assert emulator.faults.stalled == 0


def test_stalled_upload_stops_reading_the_body(emulator):
    """For an upload, `stall_after` is bytes of the request body: the server stops reading
    there (the client's send blocks), and the file is never written whole."""
    import threading

    sb = Sandbox.create(template="base")
    emulator.faults.add("upload", "stall", seconds=None, stall_after=4096)
    done = threading.Event()

    def upload() -> None:
        try:
            sb.files.write("/home/user/up.bin", io.BytesIO(os.urandom(8 << 20)))
        except Exception:  # noqa: BLE001 - dropped when the faults are cleared
            pass
        finally:
            done.set()

    threading.Thread(target=upload, daemon=True).start()
    deadline = time.monotonic() + 30
    while emulator.faults.stalled < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.faults.stalled == 1 and not done.is_set()
    emulator.faults.clear()
    assert done.wait(60)
    path = emulator.host_path(sb.sandbox_id, "/home/user/up.bin")
    assert not path.exists() or path.stat().st_size < 8 << 20
