"""A child's conversation from Claude Code's transcript files (JSONL), across /clear and resumes.

Claude Code writes one file per Claude session id (``<config>/projects/<slug>/<id>.jsonl``);
``/clear`` starts a new id and file, ``--resume`` appends to the old one. The hook records the
id of every event, so the child's files are, in order, those of the distinct ids its hooks saw
(plus the row's current ``transcript_path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandboxrun.store import Session, SessionStore


def transcript_paths(store: SessionStore, session: Session) -> list[Path]:
    """The child's transcript files, oldest first (only those that exist)."""
    ids: list[str] = []
    rows = store.conn.execute(
        "SELECT payload FROM events WHERE session_id = ? AND kind = 'hook' ORDER BY id",
        (session.id,),
    ).fetchall()
    for (payload,) in rows:
        try:
            cid = json.loads(payload).get("claude_session_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(cid, str) and cid and cid not in ids:
            ids.append(cid)
    current = Path(session.transcript_path) if session.transcript_path else None
    paths: list[Path] = []
    if current is not None:
        for cid in ids:
            candidate = current.with_name(f"{cid}.jsonl")
            if candidate not in paths:
                paths.append(candidate)
        if current in paths:  # the current file is the newest, whatever order ids came in
            paths.remove(current)
        paths.append(current)
    return [p for p in paths if p.is_file()]


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _entry(rec: dict[str, Any]) -> dict[str, Any] | None:
    kind = rec.get("type")
    if kind not in ("user", "assistant") or rec.get("isMeta"):
        return None
    message = rec.get("message") or {}
    content = message.get("content")
    texts: list[str] = []
    tools: list[dict[str, Any]] = []
    results = 0
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                tools.append({"name": block.get("name"), "input": block.get("input")})
            elif block.get("type") == "tool_result":
                results += 1
    if not texts and not tools:
        return None  # tool results alone: the tool use above says what happened
    return {
        "role": kind,
        "text": "\n".join(texts),
        "tool_uses": tools,
        "timestamp": rec.get("timestamp"),
        "claude_session_id": rec.get("sessionId"),
        "api_error": rec.get("error") if rec.get("isApiErrorMessage") else None,
    }


def conversation(paths: list[Path]) -> list[dict[str, Any]]:
    """User and assistant messages (with tool uses) of these transcript files, in order."""
    out: list[dict[str, Any]] = []
    for path in paths:
        for rec in _records(path):
            entry = _entry(rec)
            if entry is not None:
                out.append(entry)
    return out


def rate_limit_reset(path: Path | None) -> float | None:
    """The reset time of the newest usage-limit (429) record in a transcript, if the newest
    API result is one; None when the last word was a success or there is no such record."""
    if path is None or not path.is_file():
        return None
    for rec in reversed(_records(path)):
        if rec.get("type") != "assistant":
            continue
        if not rec.get("isApiErrorMessage"):
            return None  # a real answer came after any limit
        if rec.get("error") != "rate_limit" and rec.get("apiErrorStatus") != 429:
            return None
        info = (rec.get("apiErrorParams") or rec.get("api_error_params") or {}).get(
            "rate_limit_info"
        ) or {}
        reset = info.get("resetsAt")
        return float(reset) if isinstance(reset, int | float) else None
    return None
