"""The fake Anthropic API on its own (fast: no Claude Code CLI needed).

It is the ground the e2e tests stand on, so its wire format and scripting rules are pinned
here with plain HTTP requests.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fake_anthropic import (
    FakeAnthropic,
    error,
    rate_limited,
    reply,
    stream_error,
    text,
    tool,
)

MAIN = {"model": "claude-test", "stream": True, "tools": [{"name": "Bash"}], "messages": []}
SIDE = {"model": "claude-haiku", "stream": True, "messages": []}


def sse(response: httpx.Response) -> list[tuple[str, dict]]:
    """Decode an SSE body into (event, data) pairs."""
    pairs = []
    for chunk in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        pairs.append((lines["event"], json.loads(lines["data"])))
    return pairs


def streamed_text(events: list[tuple[str, dict]]) -> str:
    """The text deltas of a stream, joined."""
    return "".join(d["delta"].get("text", "") for e, d in events if e == "content_block_delta")


@pytest.fixture
def api():
    with FakeAnthropic() as fake:
        yield fake


def post(api: FakeAnthropic, body: dict) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/messages?beta=true", json=body, timeout=60)


def test_tool_reply_streams_in_wire_order(api):
    """A tool call streams as message_start, ping, block start/deltas/stop, delta, stop."""
    api.script(tool("Bash", command="ls -la"))

    events = sse(post(api, MAIN))

    names = [e for e, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[2][1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "Bash"
    partial = "".join(d["delta"]["partial_json"] for e, d in events if e == "content_block_delta")
    assert json.loads(partial) == {"command": "ls -la"}
    assert events[6][1]["delta"]["stop_reason"] == "tool_use"


def test_text_reply_ends_turn_and_reports_usage(api):
    """A text reply ends with stop_reason end_turn and the scripted usage."""
    api.script(text("hello there"))

    events = sse(post(api, MAIN))

    assert streamed_text(events) == "hello there"
    delta = next(d for e, d in events if e == "message_delta")
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 20


def test_side_requests_do_not_consume_the_script(api):
    """Requests without tools get the side reply; the script waits for the main loop."""
    api.script(text("for the agent"))

    side = sse(post(api, SIDE))
    main = sse(post(api, MAIN))

    assert streamed_text(side) == "Fake title"
    assert streamed_text(main) == "for the agent"
    assert [r.kind for r in api.requests] == ["side", "main"]


def test_script_runs_out_into_default(api):
    """After the script, every main request gets the default "done" text."""
    api.script(text("one"))
    post(api, MAIN)

    events = sse(post(api, MAIN))

    assert streamed_text(events) == "done"


def test_error_times_and_headers(api):
    """error(times=2) answers twice; rate_limited sends the unified usage-limit headers."""
    api.script(error(529, times=2), rate_limited(1893456000), text("after"))

    first, second = post(api, MAIN), post(api, MAIN)
    limited = post(api, MAIN)

    assert first.status_code == second.status_code == 529
    assert first.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert limited.status_code == 429
    assert limited.headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert limited.headers["anthropic-ratelimit-unified-reset"] == "1893456000"
    assert limited.headers["x-should-retry"] == "false"
    # rate_limited() repeats for ever, like an exhausted quota.
    assert post(api, MAIN).status_code == 429


def test_stream_error_arrives_inside_a_200(api):
    """stream_error() sends HTTP 200, then an error event."""
    api.script(stream_error())

    response = post(api, MAIN)

    assert response.status_code == 200
    assert sse(response)[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


def test_dynamic_reply_sees_the_request(api):
    """A callable in the script builds its reply from the recorded request."""
    api.script(lambda req: text(f"you sent {len(req.messages)} messages"))

    events = sse(post(api, {**MAIN, "messages": [{"role": "user", "content": "hi"}]}))

    assert streamed_text(events) == "you sent 1 messages"


def test_recorded_request_helpers(api):
    """Prompt texts, tool results and the working directory are easy to get at."""
    body = {
        **MAIN,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "the plan"}]},
            {"role": "system", "content": " - Primary working directory: /work/x\n"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ],
    }
    post(api, body)

    (req,) = api.main_requests
    assert req.user_texts() == ["the plan"]
    assert req.working_directory == "/work/x"
    assert req.tool_results() == [{"type": "tool_result", "tool_use_id": "t1"}]
    assert req.tool_names == ["Bash"]


def test_non_streaming_request_gets_json(api):
    """stream: false gets a plain Messages API JSON body."""
    api.script(reply(text("a"), tool("Bash", command="ls")))

    body = post(api, {**MAIN, "stream": False}).json()

    assert [b["type"] for b in body["content"]] == ["text", "tool_use"]
    assert body["stop_reason"] == "tool_use"


def test_unknown_path_is_404_and_recorded(api):
    """Anything but /v1/messages is a 404 the tests can see in api.requests."""
    response = httpx.get(f"{api.url}/v1/models", timeout=60)

    assert response.status_code == 404
    assert api.requests[-1].kind == "other"
