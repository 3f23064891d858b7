"""One error hierarchy for sandboxrun.

Every error carries a message (what happened) and an optional hint (what to do next).
Only the CLI's entry point turns them into ``Error:``/``Hint:`` lines; core code only raises
them.
"""

from __future__ import annotations


class SandboxrunError(Exception):
    """Base class: something went wrong that the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SandboxrunError):
    """The command was called wrongly (bad flag value, missing argument)."""

    exit_code = 2


class Interrupted(SandboxrunError):
    """Ctrl-C during a long-running command, with what was left running: exit 130 (SIGINT)."""

    exit_code = 130


class ConfigError(SandboxrunError):
    """A configuration file or environment variable is invalid."""


class NotAGitRepoError(SandboxrunError):
    """The path given is not inside a git repository."""


class GitError(SandboxrunError):
    """A git operation failed."""


class ProcessError(SandboxrunError):
    """An external program failed or could not be started."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        argv: list[str] | None = None,
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, hint)
        self.argv = argv or []
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class ProgramNotFoundError(ProcessError):
    """The program to run is not installed (or not on PATH)."""


class SessionNotFoundError(SandboxrunError):
    """No session matches the given id, prefix or name."""


class AmbiguousSessionError(SandboxrunError):
    """A session prefix matches more than one session."""


class NameInUseError(SandboxrunError):
    """A session, branch or worktree with this name already exists."""


class PackError(SandboxrunError):
    """Selecting or packing files for upload failed."""


class UnsafeArchiveError(SandboxrunError):
    """An archive holds a member that could escape its destination."""


class PatchRejectedError(SandboxrunError):
    """Changes brought back from a sandbox failed a safety check."""

    def __init__(self, message: str, hint: str | None = None, *, paths: list[str] | None = None):
        super().__init__(message, hint)
        self.paths = paths or []


class BackendError(SandboxrunError):
    """A sandbox backend failed (create, upload, command, download)."""


class SandboxLostError(BackendError):
    """The sandbox is gone (expired, killed or never existed)."""


class AuthError(BackendError):
    """The backend rejected our credentials."""


class TemplateNotFoundError(BackendError):
    """The template or snapshot a sandbox was to start from does not exist (any more)."""


class AgentError(SandboxrunError):
    """The agent (Claude Code) could not be started or failed."""


class StateError(SandboxrunError):
    """sandboxrun's state (``state.db``, its home directory, the disk) cannot be used.

    Raised from ``sandboxrun/faults.py``, which says what happened and the next step.
    """

    def __init__(self, message: str, hint: str | None = None, *, kind: str = "") -> None:
        super().__init__(message, hint)
        #: corrupt | readonly | locked | full | io | cantopen | schema
        self.kind = kind
