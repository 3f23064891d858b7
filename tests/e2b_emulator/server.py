"""E2BEmulator: the E2B control plane and envd on one loopback port (uvicorn, in a thread).

Point the unmodified SDK at it with :meth:`E2BEmulator.env` (``E2B_API_URL`` and
``E2B_SANDBOX_URL`` both set to its URL). Requests carrying an ``E2b-Sandbox-Id`` header for
``/health``, ``/files`` or the Connect services go to that sandbox's envd; everything else is
the control plane, guarded by ``X-API-KEY``. Test controls (expire, lose, inject 429/507,
hide ``claude``) are methods here, and a few are also HTTP endpoints under ``/_emulator/`` for
an emulator run as a separate process (``python -m tests.e2b_emulator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import envd
from .faults import Faults
from .sandboxes import ENVD_VERSION, SANDBOX_HOME, EmuSandbox, SandboxManager, copy_tree

DEFAULT_API_KEY = "e2b_emulator_test_key"
#: the templates a fresh emulator knows: E2B's default and sandboxrun's default
DEFAULT_TEMPLATES = ("base", "sandboxrun-claude")
_ENVD_PREFIXES = ("/process.Process/", "/filesystem.Filesystem/")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


class E2BEmulator:
    """A loopback E2B (control plane + envd) whose sandboxes are namespaces on this machine.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Requires Linux and
    ``unshare``, ``nsenter`` and ``setpriv`` (util-linux); without root, unprivileged user
    namespaces (``userns``, on by default for a non-root user, puts each sandbox in one).
    ``shadow_home`` gives each sandbox a private ``/home`` (default: when this machine has no
    ``/home/user`` to mount over). :meth:`check` proves a sandbox can start here.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        root: Path | None = None,
        templates: Iterable[str] | None = DEFAULT_TEMPLATES,
        claude: str | os.PathLike[str] | None = None,
        max_timeout: float = 86_400,
        default_timeout: float = 300,
        userns: bool | None = None,
        shadow_home: bool | None = None,
    ) -> None:
        self.api_key = api_key
        self.userns = os.geteuid() != 0 if userns is None else userns
        self.shadow_home = not os.path.isdir(SANDBOX_HOME) if shadow_home is None else shadow_home
        #: None accepts any template; otherwise unknown ones get E2B's 404
        self.templates = set(templates) if templates is not None else None
        self.max_timeout = max_timeout
        self.default_timeout = default_timeout
        self.stats: Counter[str] = Counter()
        self._root_given = root is not None
        self._root = Path(root) if root is not None else None
        self._claude = claude
        self._lock = threading.Lock()
        self._control_failures: list[tuple[int, int | None]] = []
        self._upload_failures: list[int] = []
        self._idempotency: dict[str, str] = {}
        #: one lock per idempotency key: a create and its retries are carried out one by one
        self._creating: dict[str, asyncio.Lock] = {}
        #: when each create was accepted (time.time(), in order), and when one was refused
        #: by ``create_rate_limit`` (429): tests check the client's spacing against these
        self.create_times: list[float] = []
        self.refused_create_times: list[float] = []
        #: accept at most this many creations per second (E2B's per-team limit), else 429
        self.create_rate_limit: float | None = None
        #: snapshots (``create_snapshot``): id -> the copy of the sandbox's home it was made of
        self.snapshots: dict[str, Path] = {}
        #: scripted failures per kind of request (tests/e2b_emulator/faults.py)
        self.faults = Faults()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.manager: SandboxManager | None = None
        self.port = 0
        self._process_app = None
        self._fs_app = None
        self._control_app = self._build_control_app()
        self._files_app = Starlette(
            routes=[
                Route("/files", self._files, methods=["GET", "POST"]),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """Environment variables that point the E2B SDK (and sandboxrun) at this emulator."""
        return {
            "E2B_API_URL": self.url,
            "E2B_SANDBOX_URL": self.url,
            "E2B_API_KEY": self.api_key if api_key is None else api_key,
        }

    def start(self) -> E2BEmulator:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="e2b-emulator-"))
        (self._root / "sandboxes").mkdir(parents=True, exist_ok=True)
        (self._root / "tools").mkdir(exist_ok=True)
        self.set_claude(self._claude)
        self.manager = SandboxManager(
            self._root / "sandboxes",
            self._root / "tools",
            userns=self.userns,
            shadow_home=self.shadow_home,
        )
        self._process_app = ProcessASGIApplication(envd.ProcessService(self.manager))
        self._fs_app = FilesystemASGIApplication(envd.FilesystemService())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # E2B's servers (Go) answer with Nagle off. asyncio turns it off only for sockets
        # created with proto=IPPROTO_TCP, so set it here (accepted sockets inherit it):
        # without it every keep-alive request waits ~40 ms for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=75,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="e2b-emulator",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the E2B emulator did not start")
        return self

    def stop(self) -> None:
        """Kill every sandbox (and its processes), stop the server, delete its files."""
        self.faults.clear()  # ends the stalls holding requests
        if self._loop is not None and self.manager is not None and self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self.manager.destroy_all(), timeout=60)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        if not self._root_given and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def check(self) -> None:
        """Start a sandbox and run a command in it; raise RuntimeError saying why it failed.

        Starting the server proves nothing about namespaces: this does.
        """
        self._call(self._check())

    async def _check(self) -> None:
        sandbox = await self.manager.create(
            template_id="check", timeout=60, metadata={}, env_vars={}
        )
        try:
            if not sandbox.host_path(SANDBOX_HOME).samefile(sandbox.home):
                raise RuntimeError(f"/home/user inside a sandbox is not {sandbox.home}")
            proc, queue = await self.manager.start_process(
                sandbox, cmd="/bin/sh", args=["-c", "pwd"], envs={}, cwd=None, stdin=False,
                tag=None,
            )  # fmt: skip
            output = b""
            while (item := await asyncio.wait_for(queue.get(), 30))[0] == "data":
                output += item[2]
            if item[0] != "end" or item[1].exit_code != 0 or output != b"/home/user\n":
                raise RuntimeError(f"a command in a sandbox failed: {item[1]!r} {output!r}")
        finally:
            await self.manager.destroy(sandbox.sandbox_id, "check")
            self.manager.gone.pop(sandbox.sandbox_id, None)

    def __enter__(self) -> E2BEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro, timeout: float = 30):
        assert self._loop is not None, "emulator not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- test controls ---------------------------------------------------------------------

    def sandbox_ids(self) -> list[str]:
        """Ids of the sandboxes alive now."""
        return list(self.manager.sandboxes) if self.manager else []

    def sandbox(self, sandbox_id: str) -> EmuSandbox:
        """The live sandbox ``sandbox_id`` (KeyError when it is gone)."""
        return self.manager.sandboxes[sandbox_id]

    def host_path(self, sandbox_id: str, path: str) -> Path:
        """Where ``path`` inside the sandbox is on this machine (for test assertions)."""
        return self.sandbox(sandbox_id).host_path(path)

    def expire(self, sandbox_id: str, *, wait: bool = True) -> None:
        """Make the sandbox reach its timeout now; the reaper then kills and deletes it."""
        self.sandbox(sandbox_id).end_at = time.time()
        deadline = time.monotonic() + 60  # the reaper looks every 50 ms: a bound, not a wait
        while wait and sandbox_id in self.manager.sandboxes and time.monotonic() < deadline:
            time.sleep(0.02)

    def settle(self, timeout: float = 120) -> None:
        """Wait until destroyed sandboxes' files are gone (a kill does not wait for that)."""
        self._call(self.manager.settle(), timeout=timeout)

    def lose(self, sandbox_id: str) -> bool:
        """Kill and forget the sandbox at once, as if E2B lost it."""
        return self._call(self.manager.destroy(sandbox_id, "lost"))

    def fail_control_plane(
        self, count: int = 1, status: int = 429, retry_after: int | None = None
    ) -> None:
        """Answer the next ``count`` control-plane requests with ``status`` (e.g. 429)."""
        with self._lock:
            self._control_failures.extend([(status, retry_after)] * count)

    def fail_uploads(self, count: int = 1, status: int = 507) -> None:
        """Answer the next ``count`` uploads with ``status`` (507: not enough space)."""
        with self._lock:
            self._upload_failures.extend([status] * count)

    def take_upload_failure(self) -> bool:
        with self._lock:
            return bool(self._upload_failures) and bool(self._upload_failures.pop(0))

    def reset(self) -> None:
        """Back to a fresh state between tests: no sandboxes, no injected failures, no claude."""
        # Stalled requests first: released, they are dropped (a held create makes nothing).
        self.faults.clear()
        deadline = time.monotonic() + 60
        while self.faults.stalled and time.monotonic() < deadline:
            time.sleep(0.02)
        for sandbox_id in self.sandbox_ids():
            self.lose(sandbox_id)
        with self._lock:
            self._control_failures.clear()
            self._upload_failures.clear()
            self.create_times.clear()
            self.refused_create_times.clear()
        self.create_rate_limit = None
        for snapshot_id in list(self.snapshots):
            self.drop_snapshot(snapshot_id)
        self.faults.clear()
        self.templates = set(DEFAULT_TEMPLATES)
        self.set_claude(None)
        self.stats.clear()

    def drop_snapshot(self, snapshot_id: str) -> bool:
        """Delete a snapshot, as if it expired or someone deleted it on E2B's side.

        Sandboxes already started from it keep their files (its copy is the lower layer of
        their overlay): the copy goes with the emulator's directory.
        """
        with self._lock:
            return self.snapshots.pop(snapshot_id, None) is not None

    def set_claude(self, program: str | os.PathLike[str] | None) -> None:
        """Make ``program`` the ``claude`` on every sandbox's PATH (None: no claude at all)."""
        self._claude = program
        if self._root is None:
            return
        link = self._root / "tools" / "claude"
        link.unlink(missing_ok=True)
        if program is None:
            return
        target = Path(program).resolve()
        if target.is_relative_to("/tmp"):
            # Each sandbox has its own /tmp, where this path does not exist: copy it in (a
            # script, a test's stand-in). Programs elsewhere are linked where they live.
            shutil.copy2(target, link)
        else:
            link.symlink_to(target)

    # -- ASGI entry point ------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        if self.faults.faults and not path.startswith("/_emulator/"):
            wrapped = await self.faults.intercept(self, scope, receive, send, path, headers)
            if wrapped is None:
                return
            receive, send = wrapped
        if path in ("/health", "/files") or path.startswith(_ENVD_PREFIXES):
            await self._envd(scope, receive, send, path, headers)
            return
        if not path.startswith("/_emulator/"):
            rejection = self._control_gate(headers)
            if rejection is not None:
                await rejection(scope, receive, send)
                return
        await self._control_app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self.manager.start_reaper()
                self._ready.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.manager.destroy_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _control_gate(self, headers: dict[str, str]) -> Response | None:
        """401 for a wrong key, or an injected failure; None lets the request through."""
        if headers.get("x-api-key") != self.api_key:
            self.stats["auth_rejected"] += 1
            return _error(401, "Invalid API key, it must start with 'e2b_'")
        with self._lock:
            failure = self._control_failures.pop(0) if self._control_failures else None
        if failure is not None:
            status, retry_after = failure
            self.stats[f"injected_{status}"] += 1
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else None
            message = "Rate limit exceeded" if status == 429 else "injected failure"
            return _error(status, message, extra)
        return None

    async def _envd(self, scope, receive, send, path: str, headers: dict[str, str]) -> None:
        sandbox_id = headers.get("e2b-sandbox-id", "")
        sandbox = self.manager.sandboxes.get(sandbox_id)
        if sandbox is None:
            # What E2B's proxy answers for a sandbox that was killed or timed out.
            response = _error(502, f"The sandbox {sandbox_id} was not found")
            await response(scope, receive, send)
            return
        if headers.get("x-access-token") != sandbox.access_token:
            await _error(401, "invalid access token")(scope, receive, send)
            return
        self.stats["envd_requests"] += 1
        token = envd.current_sandbox.set(sandbox)
        try:
            if path == "/health":
                await Response(status_code=204)(scope, receive, send)
            elif path == "/files":
                await self._files_app(scope, receive, send)
            elif path.startswith("/process.Process/"):
                self.stats[path.rsplit("/", 1)[-1]] += 1
                await self._process_app(scope, receive, send)
            else:
                self.stats[path.rsplit("/", 1)[-1]] += 1
                await self._fs_app(scope, receive, send)
        finally:
            envd.current_sandbox.reset(token)

    async def _files(self, request: Request) -> Response:
        if request.method == "POST":
            self.stats["uploads"] += 1
            return await envd.upload(request, self)
        self.stats["downloads"] += 1
        return await envd.download(request, self)

    # -- control plane ---------------------------------------------------------------------

    def _build_control_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/sandboxes", self._create, methods=["POST"]),
                Route("/v2/sandboxes", self._list, methods=["GET"]),
                Route("/sandboxes", self._list, methods=["GET"]),
                Route("/v2/sandboxes/{sid}/connect", self._connect, methods=["POST"]),
                Route("/sandboxes/{sid}", self._info, methods=["GET"]),
                Route("/sandboxes/{sid}", self._kill, methods=["DELETE"]),
                Route("/sandboxes/{sid}/timeout", self._set_timeout, methods=["POST"]),
                Route("/sandboxes/{sid}/snapshots", self._snapshot, methods=["POST"]),
                Route("/templates/{tid}", self._delete_template, methods=["DELETE"]),
                Route("/_emulator/sandboxes/{sid}/expire", self._http_expire, methods=["POST"]),
                Route("/_emulator/sandboxes/{sid}/lose", self._http_lose, methods=["POST"]),
                Route("/_emulator/settle", self._http_settle, methods=["POST"]),
                Route("/_emulator/faults", self._http_faults, methods=["GET", "POST", "DELETE"]),
            ]
        )

    def _created(self, sandbox: EmuSandbox) -> dict:
        return {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": sandbox.client_id,
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": sandbox.access_token,
        }

    def _listed(self, sandbox: EmuSandbox) -> dict:
        return {
            "templateID": sandbox.template_id,
            "sandboxID": sandbox.sandbox_id,
            "clientID": sandbox.client_id,
            "startedAt": _iso(sandbox.started_at),
            "endAt": _iso(sandbox.end_at),
            "envdVersion": ENVD_VERSION,
            "cpuCount": 2,
            "memoryMB": 512,
            "diskSizeMB": 10_240,
            "state": "running",
            "metadata": sandbox.metadata,
        }

    def _check_timeout(self, timeout) -> float | Response:
        if not isinstance(timeout, int | float) or timeout <= 0:
            return _error(400, f"invalid timeout {timeout!r}")
        if timeout > self.max_timeout:
            return _error(400, f"Timeout cannot be greater than {self.max_timeout / 3600:g} hours")
        return float(timeout)

    async def _json(self, request: Request) -> dict:
        body = await request.body()
        return json.loads(body) if body else {}

    async def _create(self, request: Request) -> Response:
        self.stats["create"] += 1
        body = await self._json(request)
        template = body.get("templateID", "")
        seed = self.snapshots.get(template)
        if seed is None and self.templates is not None and template not in self.templates:
            return _error(404, f"template '{template}' not found")
        now = time.time()
        with self._lock:
            limit = self.create_rate_limit
            if limit and self.create_times and now - self.create_times[-1] < 1.0 / limit:
                self.refused_create_times.append(now)
                self.stats["rate_limited_create"] += 1
                return _error(429, "Rate limit exceeded", {"Retry-After": "1"})
            self.create_times.append(now)
        timeout = self._check_timeout(body.get("timeout", self.default_timeout))
        if isinstance(timeout, Response):
            return timeout
        key = request.headers.get("idempotency-key")
        # A retry may come while the create it repeats is still being carried out (its client
        # gave up on a slow answer): it waits for that one and gets its sandbox, not a second.
        lock = self._creating.setdefault(key, asyncio.Lock()) if key else contextlib.nullcontext()
        async with lock:
            sandbox = self.manager.sandboxes.get(self._idempotency.get(key or "", ""))
            if sandbox is None:
                sandbox = await self.manager.create(
                    template_id=template,
                    timeout=timeout,
                    metadata=body.get("metadata") or {},
                    env_vars=body.get("envVars") or {},
                    seed=seed,
                )
                if key:
                    self._idempotency[key] = sandbox.sandbox_id
        self.stats["create_served"] += 1  # even when its client is gone: tests wait on it
        return JSONResponse(self._created(sandbox), status_code=201)

    async def _connect(self, request: Request) -> Response:
        self.stats["connect"] += 1
        sandbox = self.manager.sandboxes.get(request.path_params["sid"])
        if sandbox is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        body = await self._json(request)
        if "timeout" in body:
            timeout = self._check_timeout(body["timeout"])
            if isinstance(timeout, Response):
                return timeout
            # connect only ever extends a running sandbox's life
            sandbox.end_at = max(sandbox.end_at, time.time() + timeout)
        return JSONResponse(self._created(sandbox), status_code=200)

    async def _info(self, request: Request) -> Response:
        self.stats["info"] += 1
        sandbox = self.manager.sandboxes.get(request.path_params["sid"])
        if sandbox is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        return JSONResponse({**self._listed(sandbox), "envdAccessToken": sandbox.access_token})

    async def _list(self, request: Request) -> Response:
        self.stats["list"] += 1
        wanted: dict[str, str] = {}
        if raw := request.query_params.get("metadata"):
            wanted = {
                urllib.parse.unquote(k): urllib.parse.unquote(v)
                for k, v in urllib.parse.parse_qsl(raw)
            }
        states = set(filter(None, request.query_params.get("state", "").split(",")))
        rows = [
            self._listed(s)
            for s in self.manager.sandboxes.values()
            if all(s.metadata.get(k) == v for k, v in wanted.items())
            and (not states or "running" in states)
        ]
        return JSONResponse(rows)

    async def _kill(self, request: Request) -> Response:
        self.stats["kill"] += 1
        if not await self.manager.destroy(request.path_params["sid"], "killed"):
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        return Response(status_code=204)

    async def _snapshot(self, request: Request) -> Response:
        """``create_snapshot``: copy the sandbox's home; new sandboxes can start from it."""
        self.stats["snapshot"] += 1
        sandbox = self.manager.sandboxes.get(request.path_params["sid"])
        if sandbox is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        raw_id = "snap" + secrets.token_hex(8)
        snapshot_id = f"{raw_id}:default"  # E2B: the raw template id with its tag
        where = self._root / "snapshots" / raw_id
        where.mkdir(parents=True)
        await copy_tree(sandbox.host_path(SANDBOX_HOME), where)  # what the sandbox sees
        with self._lock:
            self.snapshots[snapshot_id] = where
        return JSONResponse({"snapshotID": snapshot_id, "names": [snapshot_id]}, status_code=201)

    async def _delete_template(self, request: Request) -> Response:
        """``delete_snapshot`` (a snapshot is a template on E2B): 204, or 404 if unknown."""
        self.stats["delete_template"] += 1
        if not self.drop_snapshot(request.path_params["tid"]):
            return _error(404, f"template '{request.path_params['tid']}' not found")
        return Response(status_code=204)

    async def _set_timeout(self, request: Request) -> Response:
        self.stats["set_timeout"] += 1
        sandbox = self.manager.sandboxes.get(request.path_params["sid"])
        if sandbox is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        timeout = self._check_timeout((await self._json(request)).get("timeout"))
        if isinstance(timeout, Response):
            return timeout
        sandbox.end_at = time.time() + timeout
        return Response(status_code=204)

    async def _http_expire(self, request: Request) -> Response:
        sandbox = self.manager.sandboxes.get(request.path_params["sid"])
        if sandbox is None:
            return _error(404, "no such sandbox")
        sandbox.end_at = time.time()
        return Response(status_code=204)

    async def _http_lose(self, request: Request) -> Response:
        found = await self.manager.destroy(request.path_params["sid"], "lost")
        return Response(status_code=204 if found else 404)

    async def _http_settle(self, request: Request) -> Response:
        await self.manager.settle()
        return Response(status_code=204)

    async def _http_faults(self, request: Request) -> Response:
        """``POST`` a fault (JSON: kind, action, options), ``GET`` them, ``DELETE`` them all."""
        if request.method == "DELETE":
            self.faults.clear()
            return Response(status_code=204)
        if request.method == "POST":
            body = await self._json(request)
            try:
                fault = self.faults.add(body.pop("kind", ""), body.pop("action", ""), **body)
            except (TypeError, ValueError) as exc:
                return _error(400, str(exc))
            return JSONResponse(fault.to_dict(), status_code=201)
        return JSONResponse([f.to_dict() for f in self.faults.faults])
