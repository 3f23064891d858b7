"""A fake Anthropic Messages API for driving the real Claude Code CLI offline in tests.

Usage::

    with FakeAnthropic([tool("Write", file_path="a.txt", content="hi"), text("done")]) as api:
        run_claude(env={"ANTHROPIC_BASE_URL": api.url, ...})
        assert api.main_requests[1].tool_results()
"""

from tests.fake_anthropic.script import (
    ErrorReply,
    Reply,
    StreamErrorReply,
    TextBlock,
    ToolUseBlock,
    Usage,
    error,
    gateway_token,
    held,
    rate_limited,
    reply,
    stream_error,
    text,
    tool,
    unified_headers,
)
from tests.fake_anthropic.server import FakeAnthropic, RecordedRequest, is_main_request

__all__ = [
    "ErrorReply",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "StreamErrorReply",
    "TextBlock",
    "ToolUseBlock",
    "Usage",
    "error",
    "gateway_token",
    "held",
    "is_main_request",
    "rate_limited",
    "reply",
    "stream_error",
    "text",
    "tool",
    "unified_headers",
]
