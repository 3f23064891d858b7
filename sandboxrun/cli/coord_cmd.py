"""``sandboxrun presence``, ``sandboxrun messages``, ``sandboxrun rules``: coordination."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import typer

from sandboxrun import gitops
from sandboxrun.cli.common import console, open_store, print_json, settings_for
from sandboxrun.config import Settings, format_duration
from sandboxrun.coord import messages, presence
from sandboxrun.errors import UsageError
from sandboxrun.local import rules
from sandboxrun.local.identity import find_checkout, resolve_identity, validate_role

REPO_OPTION = typer.Option(Path("."), "--repo", help="The git repository (default: here).")

messages_app = typer.Typer(
    help=(
        "Messages between the agents of a repository (SESSION_START, SESSION_END, HEARTBEAT, "
        "STATUS_UPDATE). Your role comes from CLAUDE_INSTANCE_ID or your worktree's identity.\n\n"
        'Example: sandboxrun messages send STATUS_UPDATE --text "tests pass"'
    ),
    no_args_is_help=True,
)
rules_app = typer.Typer(
    help="The coordination rules agents follow, as Claude Code rules files.",
    no_args_is_help=True,
)


def _repo(path: Path) -> Path:
    return gitops.main_worktree(gitops.repo_root(path))


def _own_role(settings: Settings, cwd: Path) -> str | None:
    return resolve_identity(os.environ, find_checkout(cwd), settings.identities).role


@messages_app.command("list")
def list_cmd(
    for_role: str | None = typer.Option(
        None, "--for", help="Messages addressed to this role (default: your role, else all)."
    ),
    unread: bool = typer.Option(False, "--unread", help="Only unread messages for the role."),
    mark_read: bool = typer.Option(False, "--mark-read", help="Mark the listed ones read."),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
) -> None:
    """Messages of this repository, oldest first."""
    root = _repo(repo)
    settings = settings_for(root)
    role = validate_role(for_role) if for_role is not None else _own_role(settings, Path.cwd())
    store = open_store(settings)
    if role is None and (unread or mark_read):
        raise UsageError(
            "--unread and --mark-read need a role",
            "Pass --for ROLE, or set CLAUDE_INSTANCE_ID to your role.",
        )
    if role is None:
        found = messages.list_messages(store.conn, repo=str(root))
    elif unread:
        found = messages.pending(store.conn, str(root), role)
    else:
        found = [
            m
            for m in messages.list_messages(store.conn, repo=str(root))
            if m.recipient in (role, None)
        ]
    if mark_read and role is not None:
        messages.mark_read(store.conn, [m.id for m in found if m.recipient == role])
    if json_out:
        print_json([m.to_dict() for m in found])
        return
    if not found:
        console.print("No messages.")
    for m in found:
        when = datetime.fromtimestamp(m.ts).strftime("%m-%d %H:%M:%S")
        who = f"{m.sender or 'sandboxrun'} -> {m.recipient or 'everyone'}"
        text = m.body.get("text") or ", ".join(f"{k}={v}" for k, v in m.body.items() if v)
        console.print(f"{m.id:>5}  {when}  {m.type:<14} {who:<24} {text}")


@messages_app.command("send")
def send_cmd(
    kind: str = typer.Argument(..., help="Message type, e.g. STATUS_UPDATE.", metavar="TYPE"),
    text: str = typer.Option("", "--text", help="What to say (required, not blank)."),
    to: str | None = typer.Option(None, "--to", help="Address one role (default: everyone)."),
    sender: str | None = typer.Option(None, "--from", help="Your role (default: your identity)."),
    repo: Path = REPO_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print the stored message as JSON."),
) -> None:
    """Send a message to one role or to everyone in this repository.

    Example: sandboxrun messages send STATUS_UPDATE --text "api done" --to pm
    """
    if not text.strip():
        raise UsageError(
            "the message text is empty",
            f"Pass what to say with --text, e.g. sandboxrun messages send {kind} --text 'api done'.",
        )
    root = _repo(repo)
    settings = settings_for(root)
    sender = validate_role(sender) if sender is not None else _own_role(settings, Path.cwd())
    store = open_store(settings)
    mid = messages.send(
        store.conn,
        str(root),
        kind,
        sender=sender,
        recipient=validate_role(to) if to is not None else None,
        body={"text": text},
    )
    if json_out:
        print_json(messages.list_messages(store.conn, after_id=mid - 1, limit=1)[0].to_dict())
    else:
        console.print(f"sent {kind} #{mid} to {to or 'everyone'}")


def presence_cmd(
    repo: Path = REPO_OPTION,
    everywhere: bool = typer.Option(False, "--all", help="Every repository, not just this one."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
) -> None:
    """Who is working here: active, stale (no heartbeat for 5 min) or inactive, per role."""
    root = None if everywhere else _repo(repo)
    settings = settings_for(root)
    store = open_store(settings)
    found = presence.list_presence(
        store.conn, None if root is None else str(root), stale_after=settings.stale_after
    )
    if json_out:
        print_json([p.to_dict() for p in found])
        return
    if not found:
        console.print("Nobody has registered yet (sessions register when Claude Code starts).")
    for p in found:
        ago = format_duration(p.seconds_since_heartbeat)
        where = p.worktree or p.repo
        console.print(f"{p.role:<16} {p.state:<9} last heartbeat {ago} ago  {where}")


@rules_app.command("install")
def rules_install(
    repo: Path = REPO_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace a file someone edited (.bak)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write the coordination rules to .claude/rules/sandboxrun-coordination.md."""
    root = gitops.repo_root(repo)
    result = rules.install_rules(root, settings_for(root), force=force)
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"{result.action}: {result.path}")
    if result.backup:
        console.print(f"  previous version kept as {result.backup}")


@rules_app.command("show")
def rules_show(
    name: str = typer.Argument("coordination", help=f"One of: {', '.join(rules.TEMPLATES)}."),
    repo: Path = REPO_OPTION,
) -> None:
    """Print a shipped template (coordination rules, child or pm prompt)."""
    try:
        root: Path | None = gitops.repo_root(repo)
    except Exception:
        root = None
    typer.echo(rules.render(name, settings_for(root)), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(messages_app, name="messages")
    app.add_typer(rules_app, name="rules")
    app.command("presence")(presence_cmd)
