"""The dashboard's session table: only rows whose text changed are drawn again; columns fit the
screen; agent text cannot reach the terminal as control sequences; the cursor keeps its session."""

from __future__ import annotations

import pytest
from dashlib import run_app, sandbox_session, until

from sandboxrun.config import load_settings
from sandboxrun.dashboard.app import DashboardApp
from sandboxrun.dashboard.table import fit, fit_widths, plain
from sandboxrun.store import Status


@pytest.mark.parametrize(
    "text,width,keep_end,out",
    [
        ("abc", 5, False, "abc  "),
        ("sandboxrun/s000", 8, False, "sandbox…"),
        ("sandboxrun/s000", 8, True, "…un/s000"),
        ("Edit src/module/very/long/file.py", 20, True, "Edit …y/long/file.py"),
        ("Edit src/a.py", 12, True, "Edit …c/a.py"),
        ("Edit src/a.py", 9, True, "…src/a.py"),  # no room for the tool's name too
        ("日本語のブランチ", 7, True, "…ランチ"),  # wide characters: 1 + 3 x 2 cells
        ("日本語", 4, False, "日 …"),  # no half characters
        ("x", 0, False, ""),
    ],
)
def test_fit(text, width, keep_end, out):
    assert fit(text, width, keep_end=keep_end) == out


def test_fit_widths_shrinks_the_last_flexible_columns_first_and_grows_the_last():
    cols = [("name", 10, 5), ("state", 10, 10), ("action", 10, 4)]
    assert fit_widths(cols, 40) == [10, 10, 17]  # room: the last column takes it
    assert fit_widths(cols, 25) == [8, 10, 4]  # action to its least, then name
    assert fit_widths(cols, 10) == [5, 10, 4]  # no room: least widths (it scrolls)
    # as wide as the widest text within bounds; the last column takes the rest
    assert fit_widths(cols, 40, [3, 10, 2]) == [5, 10, 22]
    assert fit_widths(cols, 40, [50, 10, 2]) == [10, 10, 17]


def test_plain_drops_control_characters():
    assert plain("ok") == "ok"
    assert plain("a\x1b[2Jb\tc\nd\x07") == "a[2Jb c d"


def old_sessions(store, proj, n: int) -> list[str]:
    """``n`` running sessions whose state changed days ago (their age text stays "3d")."""
    ids = [sandbox_session(store, f"s{i:02d}", proj) for i in range(n)]
    with store.transaction() as conn:
        conn.execute("UPDATE events SET ts = ts - 3 * 86400")
        conn.execute("UPDATE sessions SET started_at = started_at - 3 * 86400")
    return ids


def test_a_change_redraws_only_its_row(proj, store):
    ids = old_sessions(store, proj, 30)
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        table = app.query_one("#sessions")
        await until(pilot, lambda: table.row_count == 30 and table.drawn[ids[5]], "drawn")
        await pilot.pause(1.2)  # a tick of the clock: ages in days, nothing to draw
        before = dict(table.drawn)
        store.set_status(ids[3], Status.COLLECTING)
        await until(pilot, lambda: table.drawn[ids[3]] > before[ids[3]], "the row drawn")
        await pilot.pause(1.2)
        assert table.get_cell(ids[3], "state") == "collecting"
        # only its row: the others' ages are in days, nothing of theirs changed. Its own state
        # age is fresh now ("collecting 1s"), so a slow machine may see it tick once more.
        assert {k for k, v in table.drawn.items() if v != before.get(k)} == {ids[3]}

    run_app(app, script)


def test_agent_text_reaches_the_screen_without_control_sequences(proj, store):
    sid = sandbox_session(store, "evil\x1b[2J\x1b]0;title\x07", proj)
    store.add_event(sid, "agent", {"type": "tool_use", "name": "Edit", "summary": "a\x1b[31m.py"})
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        table = app.query_one("#sessions")
        await until(pilot, lambda: table.row_count == 1, "the row")
        assert table.get_cell(sid, "name") == "evil[2J]0;title"
        assert table.get_cell(sid, "last action") == "Edit a[31m.py"
        line = "".join(seg.text for seg in table.render_line(1))
        assert "\x1b" not in line and "\x07" not in line and "evil[2J" in line

    run_app(app, script)


def test_the_cursor_keeps_its_session_and_follows_the_keys(proj, store):
    ids = [sandbox_session(store, f"s{i:02d}", proj) for i in range(40)]
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        table = app.query_one("#sessions")
        await until(pilot, lambda: table.row_count == 40, "the rows")
        await pilot.press("down", "down")
        assert app.selected().name == "s02"
        store.delete(ids[0])  # a row above the cursor goes: the cursor stays on s02
        await until(pilot, lambda: table.row_count == 39, "the row gone")
        assert app.selected().name == "s02"
        await pilot.press("end")
        assert app.selected().name == "s39"
        assert table.scroll_offset.y > 0  # scrolled to show it
        await pilot.press("home")
        assert app.selected().name == "s01" and table.scroll_offset.y == 0
        await pilot.press("pagedown")
        assert app.selected().name not in ("s01", "s39")

    run_app(app, script)


def test_no_sessions_says_how_to_start_one(proj, store):
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        await until(pilot, lambda: app.snap is not None, "a snapshot")
        summary = str(app.query_one("#summary").render())
        assert f"no sessions in {proj} yet" in summary and "sandboxrun run" in summary
        await pilot.press("o")  # a key with nothing selected: said, nothing breaks
        await until(pilot, lambda: app.said, "said")
        assert app.said == ["no session selected"]

    run_app(app, script)


def test_the_clock_ticks_ages_without_reading_the_database(proj, store):
    sid = sandbox_session(store, "young", proj)  # its age in seconds: new text every second
    app = DashboardApp(load_settings(), str(proj), poll=0.05)

    async def script(pilot):
        table = app.query_one("#sessions")
        await until(pilot, lambda: table.row_count == 1 and table.drawn[sid], "drawn")
        statements: list[str] = []
        app.conn.set_trace_callback(statements.append)
        age, drawn = table.get_cell(sid, "age"), table.drawn[sid]
        await until(pilot, lambda: table.get_cell(sid, "age") != age, "a tick", 60)
        await until(pilot, lambda: table.drawn[sid] > drawn, "the row drawn again", 60)
        app.conn.set_trace_callback(None)
        assert statements and set(statements) == {"PRAGMA data_version"}, statements

    run_app(app, script)


def test_every_repository_names_whose_session_a_row_is(proj, store, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    a = sandbox_session(store, "api", proj)
    b = sandbox_session(store, "web", other)
    app = DashboardApp(load_settings(), None, poll=0.05)  # --all

    async def script(pilot):
        table = app.query_one("#sessions")
        await until(pilot, lambda: table.row_count == 2, "both rows")
        assert table.get_cell(a, "name") == "proj:api"
        assert table.get_cell(b, "name") == "other:web"
        assert "every repository" in str(app.query_one("#summary").render())

    run_app(app, script)
