"""Settings: built-in defaults, then the repo's config file, then env vars, then flags.

The repo's file is ``.sandboxrun.toml`` (top-level keys) or ``[tool.sandboxrun]`` in its
``pyproject.toml``. Environment variables (``SANDBOXRUN_*``) override the file because they are
the per-machine, per-shell choice; explicit command-line flags override everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sandboxrun.errors import ConfigError, SandboxrunError, UsageError
from sandboxrun.home import DEFAULT_HOME, absolute_home
from sandboxrun.tuning import MAX_SECONDS

DEFAULT_TEMPLATE = "sandboxrun-claude"
#: the Claude Code release sandboxrun installs (template build, --install-claude). Newer ones
#: need Node >= 22; this one runs on Node 20 too.
CLAUDE_CODE_VERSION = "2.1.330"
#: what to do when Claude Code is missing on this machine (the local backend, run pre-checks)
INSTALL_CLAUDE_HINT = (
    "Install it with `scripts/install.sh --with-claude` or `npm install -g "
    "@anthropic-ai/claude-code`, or set SANDBOXRUN_CLAUDE_BIN to the claude executable."
)

#: the ``warn_at`` value (``--warn-at none``) of a run that gives no warnings before its limit
NO_WARNINGS = "none"

#: how a run's upload may be compressed (``pack`` also writes "none")
UPLOAD_COMPRESSIONS = ("gzip", "zstd")

#: the sandbox backends a run can use (``--backend``, ``backend`` setting)
BACKENDS = ("e2b", "local")

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")
_UNIT = {"h": 3600, "m": 60, "s": 1, "": 1}


#: the longest duration anything takes (30 days): beyond it a typo, not a plan, and a number
#: too big for the clocks and timers it ends up in (an infinite one failed a run mid-way)
MAX_DURATION = MAX_SECONDS


def parse_duration(text: str | int | float) -> float:
    """Parse ``90s``, ``20m``, ``1h``, ``1h30m`` (or a bare number of seconds) into seconds.

    More than zero and at most :data:`MAX_DURATION`; anything else is a :class:`UsageError`.
    """
    if isinstance(text, int | float):
        if not text > 0:  # also NaN
            raise UsageError(
                f"duration must be positive, got {text}", "e.g. 90s, 20m, 1h or 1h30m."
            )
        return _bounded(float(text), text)
    raw = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if raw and pos == len(raw) and total <= 0:
        raise UsageError(
            f"duration {text!r} is zero", "A time limit or mark must be more than zero: e.g. 90s."
        )
    if not raw or pos != len(raw):
        raise UsageError(
            f"invalid duration {text!r}", "Use a number with a unit: 90s, 20m, 1h or 1h30m."
        )
    return _bounded(total, text)


def _bounded(seconds: float, text: str | int | float) -> float:
    if not seconds <= MAX_DURATION:  # also inf and NaN
        raise UsageError(
            f"duration {text!r} is too long",
            f"Use at most {int(MAX_DURATION // 3600)}h (30 days): e.g. 90s, 20m, 1h or 1h30m.",
        )
    return seconds


def parse_durations(text: str) -> list[float]:
    """Parse a comma-separated list of durations (``30m,50m``), sorted ascending."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    return sorted(parse_duration(p) for p in parts)


def format_duration(seconds: float) -> str:
    """Render seconds compactly: ``45s``, ``12m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class _Invalid:
    """A setting whose configured value is bad: the error is raised by the first command that
    reads the setting, so a bad ``SANDBOXRUN_TIMEOUT`` fails ``run``, not ``status``."""

    __slots__ = ("error",)

    def __init__(self, error: SandboxrunError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<invalid: {self.error.message}>"


@dataclass(frozen=True)
class Settings:
    """Effective settings for one command.

    A setting whose value from the repo's file or the environment is bad holds an
    :class:`_Invalid`: reading it raises that setting's :class:`ConfigError` (naming where the
    value came from, the value and the accepted form); the others can still be used.
    """

    home: Path = DEFAULT_HOME
    claude_bin: str = "claude"
    backend: str | None = None  # None: e2b when E2B_API_KEY is set, else an error naming both
    timeout: float = 3600.0
    warn_at: tuple[float, ...] = (1800.0, 3000.0)
    #: seconds before the hard limit when we stop the agent and collect its work
    grace: float = 60.0
    model: str | None = None
    max_turns: int | None = None
    template: str = DEFAULT_TEMPLATE
    worktree_dir: str = ".worktrees"
    branch_prefix: str = "sandboxrun/"
    compression: str = "gzip"
    #: how often the follower polls the agent's log, seconds
    poll_interval: float = 0.5
    #: how long an agent blocked by a usage limit may sit without a result before we stop it
    quota_stall: float = 20.0
    #: how often a running agent's work is checkpointed (fetched and saved), seconds
    checkpoint_every: float = 180.0
    #: the longest a sandbox may live on the backend's plan (E2B: 1 h Hobby, 24 h Pro);
    #: stopping and collecting are planned to fit inside it
    max_lifetime: float = 3600.0
    #: upload the submodules' files too (their changes come back as patches, not applied)
    include_submodules: bool = False
    # -- local mode (agent worktrees, hooks, presence) --
    #: branch of a role's worktree; ``{role}`` is replaced by the role name
    branch_template: str = "agent/{role}/active"
    #: allowed role names; empty: any valid name
    roles: tuple[str, ...] = ()
    #: the role that works in the main checkout (every other role has its own worktree)
    pm_role: str = "pm"
    #: git identity per role: ``{"backend": {"name": "...", "email": "..."}}``
    identities: dict[str, dict[str, str]] = field(default_factory=dict)
    #: command run in a new agent worktree (argv list, or a string split like a shell would)
    post_create: tuple[str, ...] = ()
    #: files (relative to the repo) copied into a new agent worktree, e.g. ``.env.local``
    copy_files: tuple[str, ...] = ()
    #: seconds without a heartbeat after which a present session counts as stale
    stale_after: float = 300.0
    #: local mode: tmux session prefix (``{prefix}_child_NAME``); ``PROJECT_PREFIX`` wins;
    #: None: the repository directory's name
    project_prefix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if type(value) is _Invalid:
            raise value.error.with_traceback(None)  # each read afresh, not one growing trace
        return value

    def check(self, keys: Iterable[str] | None = None) -> None:
        """Raise the error of the first bad setting among ``keys`` (default: every one), so
        a command fails before it starts anything rather than half-way."""
        for key in sorted(_FILE_KEYS) if keys is None else keys:
            getattr(self, key)

    @property
    def db_path(self) -> Path:
        return self.home / "state.db"

    @property
    def sandboxes_dir(self) -> Path:
        return self.home / "sandboxes"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    def session_artifacts(self, session_id: str) -> Path:
        return self.artifacts_dir / session_id

    def with_overrides(self, **kwargs: Any) -> Settings:
        """Return a copy with every non-None keyword applied (flags win).

        Values are checked and converted as those of the config file are (``"20m"`` or
        ``1200`` for a duration); a bad one raises :class:`UsageError` naming the flag.
        """
        values = {}
        for key, value in kwargs.items():
            if value is None:
                continue
            if key not in _FILE_KEYS:
                raise TypeError(f"unknown setting {key!r}")
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}", error=UsageError)
        # not dataclasses.replace: it reads every field, which raises for a bad one not used
        current = {f.name: object.__getattribute__(self, f.name) for f in fields(self)}
        return Settings(**{**current, **values})


_FILE_KEYS = {f.name for f in fields(Settings)} - {"home", "extra"}
#: settings only local mode (agent worktrees in tmux) reads
LOCAL_MODE_KEYS = frozenset(
    {"branch_template", "roles", "pm_role", "identities", "post_create", "copy_files",
     "project_prefix"}
)  # fmt: skip
#: settings a sandbox run reads (checked before it starts: ``Settings.check``)
SANDBOX_KEYS = frozenset(_FILE_KEYS - LOCAL_MODE_KEYS)
#: settings the process following and collecting a started run reads (``attach``, ``kill``
#: taking over a run nobody follows): the run's own choices are recorded on its session
DRIVER_KEYS = frozenset(
    {"grace", "poll_interval", "quota_stall", "checkpoint_every", "max_lifetime", "stale_after",
     "claude_bin"}
)  # fmt: skip


def _read_repo_file(repo: Path | None) -> dict[str, Any]:
    """The repository's settings table: ``.sandboxrun.toml``, else ``[tool.sandboxrun]`` of
    ``pyproject.toml``; {} without either. A file that cannot be read as a TOML table (bad
    syntax, not UTF-8, a directory, unreadable) is a :class:`ConfigError` naming it."""
    if repo is None:
        return {}
    own = repo / ".sandboxrun.toml"
    pyproject = repo / "pyproject.toml"
    if not own.exists() and not pyproject.is_file():
        return {}
    import tomllib  # here: ~5 ms of every process's start, and most repos have no such file

    path = own if own.exists() else pyproject
    fix = "Fix the TOML syntax in .sandboxrun.toml (or [tool.sandboxrun] in pyproject.toml)."
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse the sandboxrun config in {repo}: {exc}", fix) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", "Save it as UTF-8 text.") from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            f"{path} is a directory", "The settings go in a file: move the directory away."
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", "Check its permissions (ls -l)."
        ) from exc
    if path == pyproject:
        data = data.get("tool", {}).get("sandboxrun", {})
        if not isinstance(data, dict):
            raise ConfigError(
                f"[tool.sandboxrun] in {path} is not a table",
                'e.g. [tool.sandboxrun] timeout = "45m"',
            )
    return dict(data)


def _coerce(
    key: str, value: Any, source: str, *, error: type[SandboxrunError] = ConfigError
) -> Any:
    """``value`` of setting ``key`` checked and converted; ``error`` names ``source`` if bad.

    The one check of every setting, whether it comes from a file, the environment or a flag.
    """
    try:
        if key in (
            "timeout", "grace", "poll_interval", "quota_stall", "checkpoint_every", "max_lifetime",
            "stale_after",
        ):  # fmt: skip
            return parse_duration(_duration_value(value))
        if key in _LOCAL_KEYS:
            return _coerce_local(key, value)
        if key == "warn_at":
            if isinstance(value, str) and value.strip().lower() == NO_WARNINGS:
                return ()
            if isinstance(value, list | tuple):
                return tuple(sorted(parse_duration(_duration_value(v)) for v in value))
            return tuple(parse_durations(str(value)))
        if key == "max_turns":
            turns = _whole_number(value)
            if turns < 1:
                raise ValueError("Give a number of turns of at least 1.")
            return turns
        if key == "include_submodules":
            return _coerce_bool(value)
        if key == "compression" and value not in UPLOAD_COMPRESSIONS:
            raise ValueError(f"Use {' or '.join(UPLOAD_COMPRESSIONS)}.")
        if key == "backend" and value not in BACKENDS:
            raise ValueError(f"Use {' or '.join(BACKENDS)}.")
        return str(value)
    except (UsageError, ValueError) as exc:
        hint = exc.hint if isinstance(exc, UsageError) else str(exc)
        if source.startswith("SANDBOXRUN_"):
            hint = f"{hint} Or unset {source} for the default.".strip()
        why = ""
        if isinstance(exc, UsageError) and not exc.message.startswith("invalid"):
            why = f" ({exc.message})"  # e.g. "duration '0s' is zero"
        raise error(f"invalid value for {key!r} in {source}: {value!r}{why}", hint) from exc


_LOCAL_KEYS = {"roles", "identities", "post_create", "copy_files"}


def _duration_value(value: Any) -> str | int | float:
    """A duration as written: text (``"45m"``) or a number of seconds, nothing else."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError('Use a number with a unit, e.g. timeout = "45m" (or 90s, 1h, 1h30m).')
    return value


def _whole_number(value: Any) -> int:
    """A count: an integer, or its digits as text (from the environment)."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError("Give a whole number, e.g. 50.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("Give a whole number, e.g. 50.") from None


def _coerce_bool(value: Any) -> bool:
    """A boolean setting: true/false in TOML, or 1/0, true/false, yes/no, on/off from env."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("Use true or false.")


def _coerce_local(key: str, value: Any) -> Any:
    """Local-mode keys: lists (or comma/space-separated strings from env) and the identity table."""
    if key == "identities":
        if not isinstance(value, dict) or not all(
            isinstance(v, dict) and set(v) <= {"name", "email"} for v in value.values()
        ):
            raise ValueError(
                'expected a table like [identities.backend] name = "..." email = "..."'
            )
        return {str(k): {f: str(x) for f, x in v.items()} for k, v in value.items()}
    if key == "post_create":
        import shlex

        return (
            tuple(str(v) for v in value)
            if isinstance(value, list | tuple)
            else tuple(shlex.split(value))
        )
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return tuple(p for p in re.split(r"[,\s]+", str(value)) if p)


def _lazy(key: str, value: Any, source: str) -> Any:
    """``value`` checked; a bad one kept as :class:`_Invalid` for the command that reads it."""
    try:
        return _coerce(key, value, source)
    except ConfigError as exc:
        return _Invalid(exc)


def _config_file(repo: Path | None) -> str:
    """The file a repository's settings were read from (for messages)."""
    if repo is not None and (repo / ".sandboxrun.toml").exists():
        return ".sandboxrun.toml"
    return "pyproject.toml [tool.sandboxrun]"


def load_settings(repo: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build settings from defaults, the repo's config file and ``SANDBOXRUN_*`` env vars."""
    env_is_process = env is None
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    file_values = _read_repo_file(repo)
    for key, value in file_values.items():
        norm = key.replace("-", "_")
        if norm not in _FILE_KEYS:
            raise ConfigError(
                f"unknown setting {key!r} in the sandboxrun config of {repo}",
                f"Known settings: {', '.join(sorted(_FILE_KEYS))}.",
            )
        values[norm] = _lazy(norm, value, f"the repo config ({_config_file(repo)})")
    for key in _FILE_KEYS - {"identities"}:
        env_value = env.get(f"SANDBOXRUN_{key.upper()}")
        if env_value:
            values[key] = _lazy(key, env_value, f"SANDBOXRUN_{key.upper()}")
    home = env.get("SANDBOXRUN_HOME")
    if home:
        values["home"] = absolute_home(home)
        if env_is_process and env.get("SANDBOXRUN_HOME") != str(values["home"]):
            # Once, here: every process we start (the detached driver, agents and their hooks,
            # tmux children) then uses this same directory whatever its working directory.
            os.environ["SANDBOXRUN_HOME"] = str(values["home"])
    return Settings(**values)
