"""The emulated envd: Connect RPC services (process, filesystem) and the ``/files`` endpoints.

The services subclass the protocol classes generated in the ``e2b`` package and are served by
its generated ASGI applications, so the wire format (Connect, JSON codec) is the SDK's own.
Which sandbox a request is for comes from the ``E2b-Sandbox-Id`` header, resolved by the
dispatcher in ``server.py`` and handed over in :data:`current_sandbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import stat
import zlib
from contextvars import ContextVar
from typing import TYPE_CHECKING

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_connect, filesystem_pb
from e2b.envd.process import process_connect, process_pb
from protobuf import Oneof
from protobuf.wkt import Timestamp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .sandboxes import CHUNK, EmulatorError, EmuProcess, EmuSandbox, SandboxManager

if TYPE_CHECKING:
    from .server import E2BEmulator

current_sandbox: ContextVar[EmuSandbox] = ContextVar("current_sandbox")
_WRITE_BATCH = 1 << 20

_CODES = {
    "not_found": Code.NOT_FOUND,
    "invalid": Code.INVALID_ARGUMENT,
    "exists": Code.ALREADY_EXISTS,
}
_SIGNALS = {process_pb.Signal.SIGKILL: 9, process_pb.Signal.SIGTERM: 15}


def _connect_error(exc: EmulatorError) -> ConnectError:
    return ConnectError(_CODES.get(exc.kind, Code.INTERNAL), exc.message)


def _event(kind: str, value) -> process_pb.ProcessEvent:
    return process_pb.ProcessEvent(event=Oneof(kind, value))


def _to_event(item: tuple) -> tuple[process_pb.ProcessEvent, bool]:
    """A queued item as a ProcessEvent, and whether it is the last one."""
    if item[0] == "data":
        data = process_pb.ProcessEvent.DataEvent(output=Oneof(item[1], item[2]))
        return _event("data", data), False
    if item[0] == "end":
        end = item[1]
        kwargs = {"exit_code": end.exit_code, "exited": end.exited, "status": end.status}
        if end.error is not None:
            kwargs["error"] = end.error
        return _event("end", process_pb.ProcessEvent.EndEvent(**kwargs)), True
    # ("lost", message): the sandbox went away mid-stream, as a dropped VM would end it
    raise ConnectError(Code.UNAVAILABLE, item[1])


async def _stream(proc: EmuProcess, queue: asyncio.Queue, keepalive: float | None):
    """Yield the process's events (start first) until its end; always unsubscribes."""
    try:
        yield _event("start", process_pb.ProcessEvent.StartEvent(pid=proc.pid))
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                yield _event("keepalive", process_pb.ProcessEvent.KeepAlive())
                continue
            event, last = _to_event(item)
            yield event
            if last:
                return
    finally:
        proc.unsubscribe(queue)


def _keepalive(ctx) -> float | None:
    with contextlib.suppress(KeyError, ValueError):
        return max(1.0, float(ctx.request_headers["keepalive-ping-interval"]))
    return None


def _find(sandbox: EmuSandbox, selector) -> EmuProcess:
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid):
            proc = sandbox.procs.get(pid)
        case Oneof(field="tag", value=tag):
            proc = next((p for p in sandbox.procs.values() if p.tag == tag), None)
        case _:
            proc = None
    if proc is None:
        raise ConnectError(Code.NOT_FOUND, "process not found")
    return proc


class ProcessService(process_connect.Process):
    """``process.Process``: commands run as real processes inside the sandbox's namespaces."""

    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    async def start(self, request, ctx):
        sandbox = current_sandbox.get()
        config = request.process or process_pb.ProcessConfig()
        try:
            proc, queue = await self.manager.start_process(
                sandbox,
                cmd=config.cmd,
                args=list(config.args),
                envs=dict(config.envs),
                cwd=config.cwd if config.has_field("cwd") else None,
                # envd opens a stdin pipe unless the request explicitly says no
                stdin=request.stdin if request.has_field("stdin") else True,
                tag=request.tag if request.has_field("tag") else None,
            )
        except EmulatorError as exc:
            raise _connect_error(exc) from exc
        async for event in _stream(proc, queue, _keepalive(ctx)):
            yield process_pb.StartResponse(event=event)

    async def connect(self, request, ctx):
        proc = _find(current_sandbox.get(), request.process)
        queue = proc.subscribe()
        async for event in _stream(proc, queue, _keepalive(ctx)):
            yield process_pb.ConnectResponse(event=event)

    async def list(self, request, ctx):
        sandbox = current_sandbox.get()
        infos = []
        for proc in sandbox.procs.values():
            config = process_pb.ProcessConfig(
                cmd=proc.cmd, args=proc.args, envs=proc.envs, cwd=proc.cwd
            )
            info = process_pb.ProcessInfo(config=config, pid=proc.pid)
            if proc.tag is not None:
                info.tag = proc.tag
            infos.append(info)
        return process_pb.ListResponse(processes=infos)

    async def send_signal(self, request, ctx):
        proc = _find(current_sandbox.get(), request.process)
        signum = _SIGNALS.get(request.signal)
        if signum is None:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unsupported signal {request.signal}")
        proc.send_signal(signum)
        return process_pb.SendSignalResponse()

    async def send_input(self, request, ctx):
        proc = _find(current_sandbox.get(), request.process)
        match request.input.input if request.input is not None else None:
            case Oneof(field="stdin", value=data):
                try:
                    await proc.write_stdin(data)
                except (EmulatorError, ConnectionError) as exc:
                    raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from exc
            case _:
                raise ConnectError(Code.INVALID_ARGUMENT, "only stdin input is supported")
        return process_pb.SendInputResponse()

    async def close_stdin(self, request, ctx):
        _find(current_sandbox.get(), request.process).close_stdin()
        return process_pb.CloseStdinResponse()


def _entry(sandbox: EmuSandbox, path: str) -> filesystem_pb.EntryInfo:
    """EntryInfo of ``path`` (inside the sandbox), from an lstat on this machine."""
    host = sandbox.host_path(path)
    try:
        st = os.lstat(host)
    except FileNotFoundError as exc:
        raise ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist") from exc
    is_link = stat.S_ISLNK(st.st_mode)
    target_st = st
    if is_link:
        with contextlib.suppress(OSError):
            target_st = os.stat(host)
    kind = (
        filesystem_pb.FileType.DIRECTORY
        if stat.S_ISDIR(target_st.st_mode)
        else filesystem_pb.FileType.FILE
    )
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    info = filesystem_pb.EntryInfo(
        name=os.path.basename(path) or "/",
        type=kind,
        path=path,
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        permissions=stat.filemode(st.st_mode),
        owner=owner,
        group=group,
        modified_time=Timestamp.from_nanos(st.st_mtime_ns),
        is_symlink=is_link,
    )
    if is_link:
        info.symlink_target = os.readlink(host)
    return info


class FilesystemService(filesystem_connect.Filesystem):
    """``filesystem.Filesystem``: the calls ``Sandbox.files`` makes (no watchers)."""

    async def stat(self, request, ctx):
        sandbox = current_sandbox.get()
        return filesystem_pb.StatResponse(entry=_entry(sandbox, sandbox.resolve(request.path)))

    async def make_dir(self, request, ctx):
        sandbox = current_sandbox.get()
        path = sandbox.resolve(request.path)
        host = sandbox.host_path(path)
        if host.exists():
            raise ConnectError(Code.ALREADY_EXISTS, f"directory '{path}' already exists")
        host.mkdir(parents=True)
        return filesystem_pb.MakeDirResponse(entry=_entry(sandbox, path))

    async def list_dir(self, request, ctx):
        sandbox = current_sandbox.get()
        root = sandbox.resolve(request.path)
        if not sandbox.host_path(root).is_dir():
            raise ConnectError(Code.NOT_FOUND, f"directory '{root}' does not exist")
        depth = request.depth or 1
        entries = []

        def walk(path: str, level: int) -> None:
            for name in sorted(os.listdir(sandbox.host_path(path))):
                child = f"{path.rstrip('/')}/{name}"
                entries.append(_entry(sandbox, child))
                if (
                    level < depth
                    and sandbox.host_path(child).is_dir()
                    and not os.path.islink(sandbox.host_path(child))
                ):
                    walk(child, level + 1)

        walk(root, 1)
        return filesystem_pb.ListDirResponse(entries=entries)

    async def remove(self, request, ctx):
        sandbox = current_sandbox.get()
        host = sandbox.host_path(request.path)
        if not os.path.lexists(host):
            raise ConnectError(Code.NOT_FOUND, f"path '{request.path}' does not exist")
        if host.is_dir() and not host.is_symlink():
            await asyncio.to_thread(shutil.rmtree, host)
        else:
            host.unlink()
        return filesystem_pb.RemoveResponse()

    async def move(self, request, ctx):
        sandbox = current_sandbox.get()
        source, dest = sandbox.resolve(request.source), sandbox.resolve(request.destination)
        if not os.path.lexists(sandbox.host_path(source)):
            raise ConnectError(Code.NOT_FOUND, f"path '{source}' does not exist")
        sandbox.host_path(dest).parent.mkdir(parents=True, exist_ok=True)
        os.rename(sandbox.host_path(source), sandbox.host_path(dest))
        return filesystem_pb.MoveResponse(entry=_entry(sandbox, dest))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


async def _body_chunks(request: Request):
    """The request body, gunzipped when the client sent ``Content-Encoding: gzip``."""
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        async for chunk in request.stream():
            if chunk:
                yield inflater.decompress(chunk)
        yield inflater.flush()
    else:
        async for chunk in request.stream():
            yield chunk


def _write_target(sandbox: EmuSandbox, path: str):
    host = sandbox.host_path(path)
    host.parent.mkdir(parents=True, exist_ok=True)
    return open(host, "wb")  # noqa: SIM115 - closed by the caller


async def _write_file(sandbox: EmuSandbox, path: str, chunks) -> None:
    """Write ``chunks`` (an async iterator) to ``path``, with the disk work in a thread.

    Each E2B sandbox writes to its own VM's disk; here all sandboxes share this event loop, so
    a write that blocks (the page cache throttling a busy disk) must not stall the others.
    Chunks are gathered into 1 MiB writes to keep the thread hops few.
    """
    fh = await asyncio.to_thread(_write_target, sandbox, path)
    try:
        pending: list[bytes] = []
        size = 0
        async for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= _WRITE_BATCH:
                await asyncio.to_thread(fh.write, b"".join(pending))
                pending, size = [], 0
        if pending:
            await asyncio.to_thread(fh.write, b"".join(pending))
    finally:
        await asyncio.to_thread(fh.close)


async def _part_chunks(part):
    while chunk := await part.read(CHUNK * 8):
        yield chunk


async def upload(request: Request, emulator: E2BEmulator) -> Response:
    """``POST /files``: octet-stream body (``?path=``) or multipart field(s) ``file``."""
    sandbox = current_sandbox.get()
    if emulator.take_upload_failure():
        # Drain first: answering mid-upload would surface as a broken pipe, not a 507.
        async for _ in request.stream():
            pass
        return _error(507, "not enough disk space available")
    written: list[str] = []
    content_type = request.headers.get("content-type", "")
    query_path = request.query_params.get("path")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=10_000)
        files = form.getlist("file")
        for part in files:
            target = query_path if (query_path and len(files) == 1) else part.filename
            if not target:
                return _error(400, "no path given for the uploaded file")
            path = sandbox.resolve(target)
            await _write_file(sandbox, path, _part_chunks(part))
            written.append(path)
        await form.close()
    else:
        if not query_path:
            return _error(400, "missing 'path' query parameter")
        path = sandbox.resolve(query_path)
        await _write_file(sandbox, path, _body_chunks(request))
        written.append(path)
    emulator.stats["bytes_uploaded"] += sum(sandbox.host_path(p).stat().st_size for p in written)
    return JSONResponse([{"name": os.path.basename(p), "type": "file", "path": p} for p in written])


async def download(request: Request, emulator: E2BEmulator) -> Response:
    """``GET /files?path=``: the file's bytes (404 when absent, 400 for a directory)."""
    sandbox = current_sandbox.get()
    path = sandbox.resolve(request.query_params.get("path", ""))
    host = sandbox.host_path(path)
    if host.is_dir():
        return _error(400, f"path '{path}' is a directory")
    try:
        # Opened before answering, as envd does: once the client has the headers (all of an
        # empty file) it may kill the sandbox, and a later open would find it gone.
        fh = await asyncio.to_thread(open, host, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return _error(404, f"path '{path}' does not exist")
    size = os.fstat(fh.fileno()).st_size
    emulator.stats["bytes_downloaded"] += size

    def chunks():
        # Exactly `size` bytes: a log still growing must not overrun the Content-Length.
        left = size
        with fh:
            while left > 0 and (chunk := fh.read(min(left, CHUNK * 8))):
                left -= len(chunk)
                yield chunk

    return StreamingResponse(
        chunks(), media_type="application/octet-stream", headers={"content-length": str(size)}
    )
