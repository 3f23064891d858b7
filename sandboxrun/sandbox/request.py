"""What a sandbox run was asked: the one reading of ``sandboxrun run``'s flags and MCP
``run_in_sandbox``'s arguments.

:func:`run_request` turns them into the run's :class:`~sandboxrun.config.Settings` (the flags
laid over the repository's config, each checked and named as the flag) and its
:class:`~sandboxrun.sandbox.prepare.RunRequest`, with the checks every caller needs: durations
that parse, values the config would take, paths made absolute against the caller's directory
(so errors and the session name the real path). Pure: it reads no file and starts nothing;
the task itself is read and checked by :func:`~sandboxrun.sandbox.prepare.read_task` when the
run is prepared.
"""

from __future__ import annotations

from pathlib import Path

from sandboxrun.config import BACKENDS, NO_WARNINGS, Settings, format_duration
from sandboxrun.errors import UsageError
from sandboxrun.sandbox.prepare import RunRequest


def run_request(
    settings: Settings,
    repo: Path,
    *,
    prompt: str | None = None,
    prompt_file: Path | None = None,
    cwd: Path | None = None,
    name: str | None = None,
    base: str = "HEAD",
    backend: str | None = None,
    timeout: str | None = None,
    warn_at: str | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    template: str | None = None,
    compression: str | None = None,
    include_submodules: bool | None = None,
    keep: bool = False,
    dry_run: bool = False,
    allow_sensitive: bool = False,
    with_changes: bool = False,
    allow_claimed: bool = False,
    install_claude: bool = False,
    update_claude: bool = False,
    no_isolation: bool = False,
) -> tuple[Settings, RunRequest]:
    """The settings and request of one sandbox run, checked.

    ``settings`` are the repository's (defaults < its config file < env); the given values win
    where they are not None (``include_submodules=None``: the config's). ``timeout`` and
    ``warn_at`` are durations as typed (``"20m"``, ``"30m,50m"``). A relative ``repo`` is made
    absolute against ``cwd`` (default: this process's directory), a relative ``prompt_file``
    against ``cwd`` when given (an MCP server's caller's directory). A value that does not
    parse is a :class:`UsageError` naming the flag; the task (exactly one of ``prompt`` and
    ``prompt_file``, not empty) is checked where it is read, by ``read_task``.
    """
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", f"Use one of: {', '.join(BACKENDS)}.")
    # As typed: the one check of each value names the flag (``--timeout``) when it is bad.
    settings = settings.with_overrides(
        backend=backend,  # so a bad SANDBOXRUN_BACKEND does not matter when --backend is given
        timeout=timeout or None,
        warn_at=warn_at or None,
        model=model,
        max_turns=max_turns,
        template=template,
        compression=compression,
        include_submodules=include_submodules,
    )
    if warn_at and not settings.warn_at and warn_at.strip().lower() != NO_WARNINGS:
        raise UsageError(
            f"--warn-at {warn_at!r} names no warning mark",
            "Give comma-separated durations before --timeout, e.g. --warn-at 30m,50m "
            "(--warn-at none: no warnings).",
        )
    if settings.warn_at and warn_at and max(settings.warn_at) >= settings.timeout:
        limit = (
            f"--timeout {timeout}"
            if timeout
            else f"{format_duration(settings.timeout)} without --timeout"
        )
        raise UsageError(
            f"--warn-at {warn_at} has a mark at or after the time limit ({limit}): "
            "it would never be reached",
            "Warning marks come before the limit: e.g. --timeout 1h --warn-at 30m,50m "
            "(--warn-at none: no warnings).",
        )
    e2b_only = [flag for flag, given in (("--template", template), ("--install-claude",
                install_claude)) if given]  # fmt: skip
    repo = repo.expanduser()
    req = RunRequest(
        repo=repo
        if repo.is_absolute()
        else (cwd or Path.cwd()) / repo,  # errors name the real path
        prompt=prompt,
        prompt_file=_from(prompt_file, cwd),
        name=name,
        base=base,
        backend=backend,
        keep=keep,
        dry_run=dry_run,
        allow_sensitive=allow_sensitive,
        with_changes=with_changes,
        e2b_only=tuple(e2b_only),
        extra_options={
            "install_claude": install_claude,
            "update_claude": update_claude,
            "no_isolation": no_isolation,
            "allow_claimed": allow_claimed,
        },
    )
    return settings, req


def _from(path: Path | None, cwd: Path | None) -> Path | None:
    """A relative ``path`` taken from ``cwd``; as given without a ``cwd`` (then this process's
    directory applies, and messages show the path as the person typed it). Links stay."""
    if path is None or cwd is None or path.is_absolute():
        return path
    return cwd / path
