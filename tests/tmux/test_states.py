"""derive_state on recorded sequences of hook facts and pane facts (pure)."""

from __future__ import annotations

import pytest

from sandboxrun.local.states import Facts, derive_state, prompt_hash, title_busy

T0 = 1_800_000_000.0
SPIN = "\u2810 Claude Code"  # a Braille spinner frame: working
DONE = "\u2733 Claude Code"  # ✳: done


def replay(steps, **kw):
    """Feed a recorded sequence of facts (dicts) and collect the states."""
    return [derive_state(Facts(**step), **kw).name for step in steps]


def test_a_normal_turn():
    steps = [
        {"now": T0, "started_at": T0, "pane_title": "vm"},
        {"now": T0 + 1, "started_at": T0, "activity": "idle", "activity_at": T0 + 0.5},
        {"now": T0 + 2, "activity": "busy", "activity_at": T0 + 1.5, "pane_title": SPIN},
        {"now": T0 + 3, "activity": "busy", "activity_at": T0 + 2.5, "pane_title": SPIN},
        {"now": T0 + 4, "activity": "idle", "activity_at": T0 + 3.9, "pane_title": DONE},
    ]
    assert replay(steps) == ["starting", "idle", "busy", "busy", "idle"]


def test_a_turn_ending_without_a_stop_hook_falls_back_to_the_title_after_the_grace():
    base = {"activity": "busy", "activity_at": T0, "last_heartbeat": T0, "pane_title": DONE}
    assert replay([{**base, "now": T0 + 5}], grace=10) == ["busy"]  # within the grace
    assert replay([{**base, "now": T0 + 11}], grace=10) == ["idle"]
    # the spinner keeps it busy however long the hooks stay quiet (under stale_after)
    assert replay([{**base, "now": T0 + 200, "pane_title": SPIN, "pane_changed_at": T0 + 199}]) == [
        "busy"
    ]


def test_permission_quota_and_exit():
    assert replay([{"now": T0, "activity": "needs_permission", "activity_at": T0}]) == [
        "needs_permission"
    ]
    state = derive_state(Facts(now=T0, activity="usage_limited", resets_at=T0 + 60))
    assert (state.name, state.resets_at) == ("waiting_quota", T0 + 60)
    assert replay([{"now": T0, "activity": "exited"}]) == ["exited"]
    # the pane is the last word: claude killed (no SessionEnd) or the session gone
    assert replay([{"now": T0, "activity": "busy", "pane_dead": True}]) == ["exited"]
    assert replay([{"now": T0, "activity": "idle", "pane_exists": False}]) == ["exited"]
    # a turn that failed with another error waits for input
    assert replay([{"now": T0, "activity": "error"}]) == ["idle"]


def test_stale_needs_both_no_hook_and_an_unchanged_pane():
    quiet = {"activity": "busy", "activity_at": T0, "last_heartbeat": T0, "pane_title": SPIN}
    assert replay([{**quiet, "now": T0 + 400, "pane_changed_at": T0}], stale_after=300) == ["stale"]
    # the pane still changing: not stale
    assert replay([{**quiet, "now": T0 + 400, "pane_changed_at": T0 + 390}], stale_after=300) == [
        "busy"
    ]
    # never started: stale after the same time
    assert replay([{"now": T0 + 400, "started_at": T0, "pane_changed_at": T0}]) == ["stale"]


@pytest.mark.parametrize(
    ("title", "busy"),
    [
        ("\u2802 Claude Code", True),
        ("\u28ff x", True),
        ("\u2733 Claude Code", False),
        ("", None),
        ("vm", None),
        (None, None),
    ],
)
def test_title_busy(title, busy):
    assert title_busy(title) is busy


def test_prompt_hash_ignores_line_ends_and_surrounding_space():
    assert prompt_hash("a\r\nb\n") == prompt_hash("  a\nb")
    assert prompt_hash("a b") != prompt_hash("a  b")


def test_permission_dialog_seen_on_the_pane_before_and_after_its_hooks():
    busy = {"activity": "busy", "activity_at": T0, "pane_title": DONE}
    # the Notification hook comes ~6 s after the dialog: the pane says it first
    assert replay([{**busy, "now": T0 + 1, "pane_asks": True}]) == ["needs_permission"]
    asked = {"activity": "needs_permission", "activity_at": T0, "pane_title": DONE}
    assert replay([{**asked, "now": T0 + 60, "pane_asks": True}]) == ["needs_permission"]
    assert replay([{**asked, "now": T0 + 60}]) == ["needs_permission"]  # pane not looked at
    # dismissed with Escape: no Stop hook, the dialog gone, the title done
    assert replay([{**asked, "now": T0 + 60, "pane_asks": False}], grace=10) == ["idle"]
    assert replay([{**asked, "now": T0 + 5, "pane_asks": False}], grace=10) == ["needs_permission"]


def test_prompt_hash_sees_through_claude_codes_paste_wrapper():
    text = "@app.txt please look\nat this file\n\n  indented line"
    wrapped = f'\n\n<pasted_content id="a48a">\n{text}\n</pasted_content id="a48a">\n'
    assert prompt_hash(wrapped) == prompt_hash(text)
    assert prompt_hash(wrapped) != prompt_hash(text + "x")


def test_a_child_being_created_has_no_pane_yet():
    new = {"started_at": T0, "pane_exists": False}
    assert replay([{**new, "now": T0 + 1}], grace=10) == ["starting"]
    assert replay([{**new, "now": T0 + 11}], grace=10) == ["exited"]


def test_a_reset_said_to_the_minute_within_that_minute_is_not_tomorrow():
    from datetime import UTC, datetime

    from sandboxrun.hook import resets_at

    now = datetime(2026, 11, 30, 19, 27, 30, tzinfo=UTC).timestamp()
    msg = {"last_assistant_message": "You've hit your 5-hour limit · resets 7:27pm (UTC)"}
    assert resets_at(msg, now) == datetime(2026, 11, 30, 19, 27, tzinfo=UTC).timestamp()
    later = {"last_assistant_message": "You've hit your 5-hour limit · resets 7:26pm (UTC)"}
    # a minute and a half ago is not "now": that one is tomorrow's
    assert resets_at(later, now) == datetime(2026, 12, 1, 19, 26, tzinfo=UTC).timestamp()


def test_prefix_from_env_then_config_then_the_repo_name(tmp_path):
    from sandboxrun.config import load_settings
    from sandboxrun.local.spawn import child_session, prefix_for

    repo = tmp_path / "my.repo"
    repo.mkdir()
    assert prefix_for(repo, load_settings(None), {}) == "my-repo"  # tmux-safe
    (repo / ".sandboxrun.toml").write_text('project_prefix = "proj"\n')
    settings = load_settings(repo, env={})
    assert prefix_for(repo, settings, {}) == "proj"
    assert prefix_for(repo, settings, {"PROJECT_PREFIX": "envp"}) == "envp"
    assert child_session("proj", "api") == "proj_child_api"


def test_the_screens_status_line_outranks_claude_codes_title():
    """2.1.330 in tmux keeps its title at "✳ Claude Code" through a whole turn: a long tool
    call or a slow reply must stay busy after the grace while the screen says working."""
    base = {"activity": "busy", "activity_at": T0, "last_heartbeat": T0, "pane_title": DONE}
    assert replay([{**base, "now": T0 + 60, "pane_working": True}], grace=10) == ["busy"]
    assert replay([{**base, "now": T0 + 60, "pane_working": False}], grace=10) == ["idle"]
    assert replay([{**base, "now": T0 + 5, "pane_working": False}], grace=10) == ["busy"]
    # no composer on the screen (not looked, a dialog): the title's word is all there is
    spin = {**base, "pane_title": SPIN}
    assert replay([{**spin, "now": T0 + 60, "pane_working": None}], grace=10) == ["busy"]
    assert replay([{**base, "now": T0 + 60, "pane_working": None}], grace=10) == ["idle"]


RULE = "\u2500" * 80
# screens of Claude Code 2.1.330 (captured from its tmux pane)
WORKING_SCREENS = [
    f"\u276f go\n\n\u273d Ideating\u2026 (3s \u00b7 \u2193 20 tokens)\n  \u25d0 medium \u00b7 /effort\n"
    f"{RULE}\n\u276f\n{RULE}\n  \u23f5\u23f5 bypass permissions on\n",
    f"  \u23bf  $ sleep 14; echo ok\n\u00b7 Ideating\u2026 (17s \u00b7 \u2193 20 tokens)\n{RULE}\n"
    f"\u276f\n{RULE}\n",
    f"\u2722 Ideating\u2026 (13s \u00b7 \u2193 20 tokens)\n   tmux focus-events off \u00b7 add "
    f"'set -g focus-events on'\n{RULE}\n\u276f \n{RULE}\n",
    f"\u276f who am i\n\n  Calling sandboxrun\u2026\n\n{RULE}\n\u276f\n{RULE}\n",
]
DONE_SCREENS = [
    f"\u25cf thinking done\n\u273b Worked for 25s \u00b7 done 9:46 PM\n{RULE}\n\u276f\n{RULE}\n",
    f"\u25cf wrote one\n\n{RULE}\n\u276f\xa0\n{RULE}\n",
]


@pytest.mark.parametrize("screen", WORKING_SCREENS)
def test_screen_working(screen):
    from sandboxrun.local.observe import screen_working

    assert screen_working(screen) is True


@pytest.mark.parametrize("screen", DONE_SCREENS)
def test_screen_done(screen):
    from sandboxrun.local.observe import screen_working

    assert screen_working(screen) is False
    assert screen_working("Do you want to proceed?\n 1. Yes\n") is None
