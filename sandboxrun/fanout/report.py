"""A group's report (markdown, JSON, one self-contained HTML page) and its integration branch."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from sandboxrun.errors import StateError
from sandboxrun.fanout import groups as G
from sandboxrun.fanout.merge import MergeResult, integrate
from sandboxrun.fanout.scheduler import session_cost, session_seconds, task_outcome
from sandboxrun.fanout.tasks import critical_path
from sandboxrun.store import SessionStore


def build_report(store: SessionStore, g: G.Group) -> dict[str, Any]:
    """Everything the report shows, as plain data (the ``json`` format prints it as is)."""
    now = time.time()
    price = float(g.options.get("price_per_second") or 0.0)
    sessions = G.sessions(store, g.id)
    rows: list[dict[str, Any]] = []
    for t in G.tasks(store, g.id):
        s = sessions.get(t.session_id or "")
        row: dict[str, Any] = {
            "task": t.name,
            "depends_on": list(t.spec.depends_on),
            "status": str(s.status) if s else t.state,
            "outcome": task_outcome(t, sessions),
            "reason": (s.error if s else None) or t.reason,
            "session": s.name if s else None,
            "branch": s.branch if s else None,
            "base_commit": t.base_commit,
            "commits": len(s.result_commits or []) if s else 0,
            "files_changed": s.files_changed if s else None,
            "insertions": s.insertions if s else None,
            "deletions": s.deletions if s else None,
            "agent_cost_usd": s.cost_usd if s else None,
            "cost_usd": round(session_cost(s, price, now), 6) if s else None,
            "turns": s.num_turns if s else None,
            "started_at": s.started_at if s else None,
            "ended_at": s.ended_at if s else None,
            "duration_s": round(session_seconds(s, now), 3) if s else 0.0,
        }
        rows.append(row)
    durations = {r["task"]: r["duration_s"] for r in rows}
    deps = {r["task"]: r["depends_on"] for r in rows}
    path = critical_path(durations, deps)
    starts = [r["started_at"] for r in rows if r["started_at"]]
    ends = [r["ended_at"] or now for r in rows if r["started_at"]]
    wall = (max(ends) - min(starts)) if starts else 0.0
    total = sum(durations.values())
    return {
        "group": g.name,
        "id": g.id,
        "status": g.status,
        "error": g.error,
        "repo": g.repo,
        "backend": g.backend,
        "options": g.options,
        "cost_usd": round(sum(r["cost_usd"] or 0.0 for r in rows), 6),
        "tasks": rows,
        "critical_path": path,
        "critical_path_s": round(sum(durations[n] for n in path), 3),
        "wall_s": round(wall, 3),
        "sum_task_s": round(total, 3),
        "speedup": round(total / wall, 2) if wall > 0 else None,
    }


def render(rep: dict[str, Any], fmt: str) -> str:
    """The report as ``md``, ``json`` or ``html`` text."""
    if fmt == "json":
        return json.dumps(rep, indent=2, default=str) + "\n"
    if fmt == "html":
        return render_html(rep)
    return render_md(rep)


def _md_cell(value: Any) -> str:
    # agents wrote some of these: no table breaks, and no raw HTML for markdown viewers
    text = html.escape(str(value if value is not None else "-"), quote=False)
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(rep: dict[str, Any]) -> str:
    lines = [
        f"# Fan-out {rep['group']}: {rep['status']}",
        "",
        f"- wall time {rep['wall_s']:.1f}s; sum of task times {rep['sum_task_s']:.1f}s; "
        f"speed-up {rep['speedup'] if rep['speedup'] is not None else '-'}×",
        f"- critical path: {' → '.join(rep['critical_path']) or '-'} "
        f"({rep['critical_path_s']:.1f}s)",
        f"- cost ${rep['cost_usd']:.4f}",
        "",
        "| task | status | branch | commits | files | cost | turns | duration | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["tasks"]:
        cost = f"${r['cost_usd']:.4f}" if r["cost_usd"] is not None else "-"
        cells = [
            r["task"],
            r["status"],
            r["branch"],
            r["commits"],
            r["files_changed"],
            cost,
            r["turns"],
            f"{r['duration_s']:.1f}s",
            r["reason"],
        ]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


_COLOURS = {"success": "#2e7d32", "failed": "#c62828", "running": "#1565c0", "pending": "#9e9e9e"}


def _graph_svg(rep: dict[str, Any]) -> str:
    """The dependency graph: tasks in columns by depth, arrows from dependency to dependent."""
    depth: dict[str, int] = {}
    for r in rep["tasks"]:  # tasks come in dependency order
        depth[r["task"]] = 1 + max((depth[d] for d in r["depends_on"]), default=-1)
    cols: dict[int, list[str]] = {}
    for name, d in depth.items():
        cols.setdefault(d, []).append(name)
    pos = {n: (20 + d * 190, 20 + i * 50) for d, names in cols.items() for i, n in enumerate(names)}
    width = 40 + 190 * (max(cols, default=0) + 1)
    height = 40 + 50 * max((len(v) for v in cols.values()), default=1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    out.append(
        '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>'
    )
    for r in rep["tasks"]:
        x2, y2 = pos[r["task"]]
        for d in r["depends_on"]:
            x1, y1 = pos[d]
            out.append(
                f'<line x1="{x1 + 150}" y1="{y1 + 15}" x2="{x2}" y2="{y2 + 15}" '
                'stroke="#555" marker-end="url(#a)"/>'
            )
    crit = set(rep["critical_path"])
    for r in rep["tasks"]:
        x, y = pos[r["task"]]
        colour = _COLOURS.get(r["outcome"], "#9e9e9e")
        stroke = ' stroke="#000" stroke-width="3"' if r["task"] in crit else ""
        out.append(
            f'<rect x="{x}" y="{y}" width="150" height="30" rx="5" fill="{colour}"{stroke}/>'
            f'<text x="{x + 8}" y="{y + 20}" fill="#fff" font-size="13">'
            f"{html.escape(r['task'])}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _timeline_svg(rep: dict[str, Any]) -> str:
    rows = [r for r in rep["tasks"] if r["started_at"]]
    if not rows:
        return "<p>No task has started.</p>"
    t0 = min(r["started_at"] for r in rows)
    span = max((r["ended_at"] or r["started_at"] + r["duration_s"]) - t0 for r in rows) or 1.0
    scale = 600 / span
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{30 + 26 * len(rows)}">']
    for i, r in enumerate(rows):
        x = 150 + (r["started_at"] - t0) * scale
        w = max(2.0, r["duration_s"] * scale)
        y = 10 + 26 * i
        colour = _COLOURS.get(r["outcome"], "#9e9e9e")
        out.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(r["task"])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="20" fill="{colour}"/>'
            f'<text x="{x + w + 4:.1f}" y="{y + 15}" font-size="11">{r["duration_s"]:.1f}s</text>'
        )
    out.append("</svg>")
    return "".join(out)


def render_html(rep: dict[str, Any]) -> str:
    """One self-contained page; every value is HTML-escaped (agents wrote some of them)."""
    e = html.escape
    rows = []
    for r in rep["tasks"]:
        cost = f"${r['cost_usd']:.4f}" if r["cost_usd"] is not None else "-"
        cells = [
            r["task"],
            r["status"],
            r["branch"] or "-",
            r["commits"],
            r["files_changed"] if r["files_changed"] is not None else "-",
            cost,
            r["turns"] if r["turns"] is not None else "-",
            f"{r['duration_s']:.1f}s",
            r["reason"] or "",
        ]
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    speed = f"{rep['speedup']}×" if rep["speedup"] is not None else "-"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Fan-out {e(rep["group"])}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#eee}}
.k{{display:inline-block;margin-right:2em}}</style></head><body>
<h1>Fan-out {e(rep["group"])}: {e(rep["status"])}</h1>
<p><span class="k">wall {rep["wall_s"]:.1f}s</span><span class="k">sum of tasks
{rep["sum_task_s"]:.1f}s</span><span class="k">speed-up {e(speed)}</span>
<span class="k">cost ${rep["cost_usd"]:.4f}</span></p>
<p>Critical path: {e(" → ".join(rep["critical_path"]) or "-")} ({rep["critical_path_s"]:.1f}s)</p>
<h2>Dependencies</h2>{_graph_svg(rep)}
<h2>Timeline</h2>{_timeline_svg(rep)}
<h2>Tasks</h2><table><tr><th>task</th><th>status</th><th>branch</th><th>commits</th>
<th>files</th><th>cost</th><th>turns</th><th>duration</th><th>note</th></tr>
{"".join(rows)}</table></body></html>
"""


def integrate_group(
    store: SessionStore, g: G.Group, into: str | None
) -> tuple[MergeResult, str, dict[str, str]]:
    """Merge the group's completed task branches, in dependency order, into one branch.

    Returns the merge, the branch and the tasks left out (name -> pending, running or failed).
    A group with no completed task is refused: an "integration" branch of nothing would only
    look like a result.
    """
    sessions = G.sessions(store, g.id)
    branches = []
    left_out: dict[str, str] = {}
    for t in G.tasks(store, g.id):
        outcome = task_outcome(t, sessions)
        s = sessions.get(t.session_id or "")
        if outcome == "success" and s is not None and s.branch:
            branches.append(s.branch)
        else:
            left_out[t.name] = outcome
    if not branches:
        why = ", ".join(f"{name} {outcome}" for name, outcome in left_out.items())
        raise StateError(
            f"group {g.name} has no completed task to integrate ({why})",
            f"See why with `sandboxrun report {g.name}`; a running group: wait for it "
            f"(`sandboxrun status {g.name}`), then integrate.",
        )
    branch = into or f"sandboxrun/{g.name}/integration"
    result = integrate(
        Path(g.repo), g.base_commit or "HEAD", branches, branch, f"sandboxrun {g.name}"
    )
    return result, branch, left_out
