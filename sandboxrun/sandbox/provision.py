"""Getting a sandbox ready and the agent running in it: pack, create, upload, baseline, start.

Each step is one method of :class:`Provisioner`, called in turn by the run driver (which checks
for ``kill`` between them and owns the sandbox once it exists). A provisioner only talks to the
sandbox through the :class:`~sandboxrun.sandbox.backends.base.Sandbox` primitives.
"""

from __future__ import annotations

import time
from pathlib import Path

from sandboxrun.agent import build_claude_argv
from sandboxrun.config import (
    CLAUDE_CODE_VERSION,
    INSTALL_CLAUDE_HINT,
    Settings,
    format_duration,
)
from sandboxrun.errors import AgentError, BackendError, SandboxrunError, UsageError
from sandboxrun.faults import disk_fault
from sandboxrun.sandbox.agentproc import AgentFiles, AgentProcess
from sandboxrun.sandbox.backends.base import Backend, Sandbox, control_dir
from sandboxrun.sandbox.collect import record_branch_head
from sandboxrun.sandbox.gitpack import save_baseline
from sandboxrun.sandbox.journal import Journal, PhaseTimes
from sandboxrun.sandbox.lifetime import Run, command_bound, start_clock
from sandboxrun.store import Session, Status
from sandboxrun.sync.pack import SUFFIXES, PackResult

#: extra lifetime asked for a sandbox while packing and uploading, before the agent's clock
#: starts (the limit is then reset to exactly --timeout when the agent starts)
PROVISION_MARGIN = 600.0
#: backends whose sandboxes take a cold upload as git objects (``Sandbox.upload_and_checkout``)
GIT_UPLOAD_BACKENDS = frozenset({"e2b"})

# The baseline commit of the unpacked repository ("$1"), without a file per object: `git add`
# streams every blob over core.bigFileThreshold (1 byte) into one pack, and `git fast-import`
# writes the trees and the commit from the index's own listing (C-quoted paths, which it
# reads back as they are). `git write-tree` then proves the commit's tree is exactly the
# index's; those trees already exist, so it writes nothing. Level-0 deflate and no fsync: it is
# a scratch store in a throwaway sandbox. No hooks run (neither command has any).
BASELINE_SCRIPT = r"""
set -e
cd "$1"
git init -q
git config user.name "Claude (sandboxrun)"
git config user.email "agent@sandboxrun.invalid"
git config commit.gpgsign false
fast="-c core.fsync=none -c core.compression=0 -c pack.compression=0"
git $fast -c core.bigFileThreshold=1 add -A
ref=$(git symbolic-ref HEAD)
tab=$(printf '\t')
{
  printf 'commit %s\ncommitter Claude (sandboxrun) <agent@sandboxrun.invalid> now\ndata 20\nsandboxrun baseline\n\n' "$ref"
  git -c core.quotepath=on ls-files -s | sed "s/^\([0-7]*\) \([0-9a-f]*\) 0$tab/M \1 \2 /"
} | git $fast fast-import --quiet --date-format=now
tree=$(git write-tree)
[ "$(git rev-parse 'HEAD^{tree}')" = "$tree" ] || { echo "baseline tree differs from the index" >&2; exit 1; }
git rev-parse HEAD
"""


def sh(sandbox: Sandbox, script: str, *args: str, timeout: float = 300) -> bytes:
    """Run a fixed shell script (arguments only via "$@") in the sandbox; raise on failure."""
    res = sandbox.exec(["sh", "-c", script, "sh", *args], cwd=sandbox.home, timeout=timeout)
    if not res.ok:
        raise BackendError(f"command in the sandbox failed: {res.error_text()[-2000:]}")
    return res.stdout


class Provisioner:
    """The steps from a session's worktree to its agent running in a fresh sandbox."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        journal: Journal,
        artifacts: Path,
        times: PhaseTimes,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.journal = journal
        self.artifacts = artifacts
        self.times = times

    def pack(self, session: Session) -> PackResult:
        """Pack the worktree for the upload under the session's artifacts.

        Git objects (``upload.pack``) where they can stand for the files, else a tarball.
        """
        from sandboxrun.sync.pack import pack_worktree

        assert session.worktree is not None
        self.journal.phase(Status.PACKING, session.worktree)
        record_branch_head(self.journal, Path(session.worktree))
        self.artifacts.mkdir(parents=True, exist_ok=True)
        compression = session.options.get("compression", self.settings.compression)
        tarball = self.artifacts / f"upload{SUFFIXES[compression]}"
        with self.times.measure("pack"):
            try:
                result = self._pack_git(session, self.artifacts / "upload.pack")
                if result is None:
                    result = pack_worktree(
                        Path(session.worktree),
                        tarball,
                        compression=compression,
                        submodules=session.options.get("included_submodules") or (),
                        # contents found clean by the secrets check are not scanned again
                        scan_cache=self.scan_cache,
                    )
            except OSError as exc:  # a full disk names the upload, not "a file"
                fault = disk_fault(exc, tarball)
                if fault is None:
                    raise
                raise fault from exc
        sel = result.selection
        self.journal.event(
            "pack",
            {
                "files": result.file_count,
                "bytes_in": result.bytes_in,
                "bytes_out": result.bytes_out,
                "compression": result.compression,
                "excluded_secrets": list(sel.excluded_secrets),
                "secret_reasons": dict(sel.secret_reasons),
                "excluded_by_ignorefile": len(sel.excluded_by_ignorefile),
                "seconds": round(self.times["pack"], 3),
            },
        )
        if sel.excluded_secrets:
            why = (f"{p} ({sel.secret_reasons.get(p, 'secret')})" for p in sel.excluded_secrets)
            self.journal.reporter.warning("kept out of the upload as secrets: " + ", ".join(why))
        return result

    @property
    def scan_cache(self) -> Path:
        """Contents found clean by the secrets check, not scanned again next time."""
        return self.settings.home / "cache" / "clean-contents"

    def _pack_git(self, session: Session, output: Path) -> PackResult | None:
        """The upload as git objects (``sync/gitupload.py``), or None: pack a tarball.

        Only for a backend that checks a pack out (E2B: the local backend unpacks a tarball
        with its own checked extractor), when the run did not ask for a tarball
        (``upload = "tar"``) and the files' bytes are their blobs (see ``gitupload.plan``).
        """
        from sandboxrun.sync import gitupload

        if self.backend.name not in GIT_UPLOAD_BACKENDS or session.options.get("upload") == "tar":
            return None
        assert session.worktree is not None
        root = Path(session.worktree)
        subs = session.options.get("included_submodules") or ()
        why = gitupload.plan(root, subs)
        if why is None:
            try:
                return gitupload.pack_git(root, output, scan_cache=self.scan_cache)
            except (SandboxrunError, OSError) as exc:  # a file changed under us, git refused
                why = getattr(exc, "message", None) or str(exc)
        self.journal.event("upload_mode", {"mode": "tar", "why": why})
        return None

    def create_sandbox(self, session: Session) -> Sandbox:
        """A fresh sandbox for the session, recorded in its row."""
        assert session.repo is not None
        self.journal.phase(Status.PROVISIONING, f"backend {session.backend}")
        rate = session.options.get("create_rate")  # a fan-out group's creation rate
        if rate and hasattr(self.backend, "create_rate"):
            self.backend.create_rate = float(rate)
        with self.times.measure("create"):
            created = time.time()  # no later than E2B's clock starts: the lifetime cap
            sandbox = self.backend.create(
                session.id,
                # Enough for the upload; the sandbox's lifetime is set to the run's limit when
                # the agent starts (never above it: E2B Hobby sandboxes live at most 1 h).
                timeout_s=PROVISION_MARGIN,
                env=self.backend.agent_env(dry_run=bool(session.options.get("dry_run"))),
                metadata={"sandboxrun_session": session.id, "repo": Path(session.repo).name},
            )
            self.journal.update(
                sandbox_id=sandbox.id, sandbox_home=sandbox.home, sandbox_created_at=created
            )
        return sandbox

    def upload(self, sandbox: Sandbox, packed: PackResult) -> None:
        """Put the files in the sandbox and commit them there as the baseline.

        A git upload is checked out and committed by one command (``upload_and_checkout``);
        a tarball is unpacked, then committed by ``BASELINE_SCRIPT``.
        """
        if packed.tree is not None:  # a git upload: the checkout makes the baseline
            with self.times.measure("upload"):
                base = sandbox.upload_and_checkout(  # type: ignore[attr-defined]
                    packed.path, packed.tree, sandbox.repo_dir
                )
            with self.times.measure("baseline"):
                self.journal.update(sandbox_base=base)
                save_baseline(sandbox, base, self.artifacts)
            return
        # in a remote sandbox, a hung baseline fails within a bound sized from the upload
        bound = command_bound(packed.path.stat().st_size) if self.backend.isolated else 300
        with self.times.measure("upload"):
            sandbox.upload_and_unpack(packed.path, packed.compression, sandbox.repo_dir)
        with self.times.measure("baseline"):
            out = sh(sandbox, BASELINE_SCRIPT, sandbox.repo_dir, timeout=bound)
            base = out.decode().strip().splitlines()[-1]
            self.journal.update(sandbox_base=base)
            save_baseline(sandbox, base, self.artifacts)

    def verify_upload(self, sandbox: Sandbox, session: Session, packed: PackResult) -> dict:
        """Compare what arrived in the sandbox with the worktree, file by file (``--dry-run``).

        Returns ``files``, ``verified``, and the first ``missing`` and ``differ`` paths.
        """
        from sandboxrun.sync.unpack import manifest

        assert session.worktree is not None
        self.journal.phase(Status.COLLECTING, "verifying the upload")
        with self.times.measure("verify"):
            files = packed.selection.files
            local = manifest(Path(session.worktree), files)
            # Hash what arrived inside the sandbox, file by file, in the order we sent the names.
            names = b"\0".join(f.encode(errors="surrogateescape") for f in files)
            listing = f"{control_dir(sandbox)}/files.lst"
            sandbox.write_file(listing, names)
            remote_out = sh(
                sandbox,
                'cd "$1" && { xargs -0 -r sha256sum -z -- < "$2" 2>/dev/null; true; }',
                sandbox.repo_dir,
                listing,
            )
            remote = {}
            for entry in remote_out.split(b"\0"):
                if entry:
                    digest, path = entry.split(b"  ", 1)
                    remote[path.decode(errors="surrogateescape")] = digest.decode()
            missing = sorted(set(local) - set(remote))
            differ = sorted(p for p in local if p in remote and remote[p] != local[p])
        return {
            "files": len(files),
            "verified": len(local) - len(missing) - len(differ),
            "missing": missing[:20],
            "differ": differ[:20],
        }

    def start_agent(self, sandbox: Sandbox, session: Session) -> AgentProcess:
        """Start Claude Code on the prompt, detached; the run's clock starts now."""
        files = AgentFiles.of(sandbox)
        sandbox.write_file(files.prompt, (session.prompt or "").encode())
        claude = self._find_claude(sandbox, session)
        budget = session.options.get("max_budget_usd")  # set per task by `fanout --budget-usd`
        argv = build_claude_argv(
            claude,
            model=session.model,
            max_turns=session.max_turns,
            extra=["--max-budget-usd", f"{float(budget):g}"] if budget else None,
        )
        env = self.backend.agent_env(dry_run=False)
        pgid = sandbox.start_detached(files.launch(argv, cwd=sandbox.repo_dir, env=env))
        now = time.time()
        timeout = session.timeout_s or self.settings.timeout
        self.journal.update(agent_pgid=pgid, started_at=now, deadline=now + timeout, log_offset=0)
        # The sandbox lives the agent's limit plus room to collect (within the plan's cap);
        # the stop is planned against both (checkpoint.stop_plan).
        start_clock(Run(self.journal, sandbox, self.settings, self.artifacts), timeout)
        self.journal.phase(Status.RUNNING, f"agent pid {pgid}, limit {format_duration(timeout)}")
        return AgentProcess(sandbox, pgid)

    def _find_claude(self, sb: Sandbox, session: Session) -> str:
        """The agent executable inside the sandbox; installs or updates it when asked."""
        opts = session.options
        # SANDBOXRUN_CLAUDE_BIN names a program on this machine; an isolated sandbox has its
        # own `claude` (from the template, or from --install-claude).
        claude = "claude" if self.backend.isolated else self.settings.claude_bin
        found = _which(sb, claude)
        if found is None and opts.get("install_claude"):
            found = self._install_claude(sb)
        if found is None:
            where = "the sandbox" if self.backend.isolated else "this machine"
            raise AgentError(
                f"Claude Code ({claude!r}) is not installed in {where}",
                "Use a template with Claude Code (`sandboxrun template build`), or pass "
                "--install-claude to install it in the sandbox with npm."
                if self.backend.isolated
                else INSTALL_CLAUDE_HINT,
            )
        if opts.get("update_claude"):
            self.journal.reporter.phase(Status.PROVISIONING, "claude update")
            res = sb.exec([found, "update"], cwd=sb.home, timeout=600)
            detail = (res.text() or res.error_text()).strip()[-300:]
            self.journal.event("phase", {"phase": "claude_update", "detail": detail, "ok": res.ok})
            if not res.ok:
                self.journal.reporter.warning(
                    "`claude update` failed, going on with the current one: "
                    + res.error_text()[-300:]
                )
        return found

    def _install_claude(self, sb: Sandbox) -> str | None:
        """Install the pinned Claude Code with npm into a prefix we own inside the sandbox."""
        if not self.backend.isolated:
            raise UsageError(
                "--install-claude installs into an isolated sandbox only (--backend e2b)",
                "On this machine, install it yourself: scripts/install.sh --with-claude.",
            )
        prefix = f"{control_dir(sb)}/npm"
        package = f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"
        self.journal.phase(Status.PROVISIONING, f"installing {package} in the sandbox")
        if _which(sb, "npm") is None:
            raise AgentError(
                "--install-claude needs npm in the sandbox, and this template has none",
                "Build the template with `sandboxrun template build` (Node, git, Claude Code).",
            )
        res = sb.exec(
            ["npm", "install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", package],
            cwd=sb.home, timeout=900,
        )  # fmt: skip
        if not res.ok:
            raise AgentError(
                f"installing {package} in the sandbox failed: {res.error_text()[-500:]}",
                "Use a template with Claude Code (`sandboxrun template build`).",
            )
        return _which(sb, f"{prefix}/bin/claude")


def _which(sandbox: Sandbox, program: str) -> str | None:
    """Where ``program`` is on the sandbox's PATH (or ``program`` itself, if a path), or None."""
    res = sandbox.exec(["sh", "-c", 'command -v "$1"', "sh", program])
    return res.text().strip().splitlines()[-1] if res.ok and res.text().strip() else None
