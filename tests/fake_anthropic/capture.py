"""Capture genuine stream-json output of the real CLI into tests/fixtures/stream_json/.

    .venv/bin/python -m tests.fake_anthropic.capture [--claude PATH] [NAME ...]

Each scenario runs the pinned Claude Code CLI against the fake API and writes NAME.jsonl
(stdout, verbatim) plus an entry in manifest.json (exit code, seconds, CLI version, what the
fake answered). Re-run after bumping the pinned version and review the diff: the parser in
sandboxrun/agent.py is tested against these files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.fake_anthropic.cli import PINNED_VERSION, claude_env, claude_version, run_claude
from tests.fake_anthropic.script import (
    ScriptItem,
    error,
    rate_limited,
    reply,
    stream_error,
    text,
    tool,
    unified_headers,
)
from tests.fake_anthropic.server import FakeAnthropic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stream_json"

#: a fixed reset time keeps the fixtures' rate-limit fields stable between captures
#: (2030-01-01 00:00 UTC, a Tuesday); the CLI renders it as "resets Jan 1, 12am (UTC)"
RESETS_AT = 1893456000


@dataclass(frozen=True)
class Scenario:
    """One captured run: what the fake answers, and how the CLI is started."""

    description: str
    script: Callable[[], list[ScriptItem]]
    prompt: str = "Create hello.txt containing hi, then list the directory."
    args: tuple[str, ...] = ()
    gateway: bool = False
    max_retries: int | None = 0
    env: dict[str, str] = field(default_factory=dict)
    #: seconds before the run is killed (for the scenarios where the CLI waits)
    timeout: float = 60


SCENARIOS: dict[str, Scenario] = {
    "success_write_bash": Scenario(
        "Write a file, run a shell command, answer with text: exit 0, subtype success.",
        lambda: [
            tool("Write", file_path="hello.txt", content="hi\n"),
            tool("Bash", command="ls", description="List files"),
            text("Created hello.txt and listed the directory."),
        ],
    ),
    "error_max_turns": Scenario(
        "--max-turns 1 on a multi-step script: exit 1, subtype error_max_turns.",
        lambda: [
            tool("Write", file_path="hello.txt", content="hi\n"),
            tool("Bash", command="ls"),
            text("done"),
        ],
        args=("--max-turns", "1"),
    ),
    "api_error_500": Scenario(
        "HTTP 500 on every request, no retries: exit 1, is_error, terminal_reason api_error.",
        lambda: [error(500, times=None)],
    ),
    "api_error_529_retried": Scenario(
        "HTTP 529 overloaded on every request, one retry: a system/api_retry event, then "
        "exit 1 with is_error.",
        lambda: [error(529, times=None)],
        max_retries=1,
    ),
    "api_error_overloaded_in_stream": Scenario(
        "HTTP 200 whose SSE stream carries an overloaded_error event: exit 1, is_error.",
        lambda: [stream_error(times=None)],
    ),
    "api_error_401": Scenario(
        "HTTP 401 invalid API key: exit 1, result 'Invalid API key · Fix external API key'.",
        lambda: [error(401, times=None)],
    ),
    "rate_limit_429_api_key": Scenario(
        "429 with usage-limit headers to an API-key user: the CLI ignores the headers "
        "(no rate_limit_event), exit 1 with 'API Error: Request rejected (429) · ...'.",
        lambda: [rate_limited(RESETS_AT)],
    ),
    "usage_limit_text_429": Scenario(
        "429 whose error message is the old 'Claude AI usage limit reached|<epoch>' text: "
        "passed through into the result text.",
        lambda: [error(429, f"Claude AI usage limit reached|{RESETS_AT}", times=None)],
    ),
    "rate_limit_rejected": Scenario(
        "429 usage-limit rejection (x-should-retry: false) through a gateway token: "
        'rate_limit_event rejected, then exit 1 with "You\'ve hit your ... limit · resets ...".',
        lambda: [rate_limited(RESETS_AT)],
        gateway=True,
        max_retries=None,
    ),
    "rate_limit_rejected_weekly": Scenario(
        "The same for the seven_day window.",
        lambda: [rate_limited(RESETS_AT, claim="seven_day")],
        gateway=True,
        max_retries=None,
    ),
    "rate_limit_rejected_mid_run": Scenario(
        "A tool call succeeds, then the next request hits the usage limit: the file exists, "
        "exit 1 with the limit message.",
        lambda: [tool("Write", file_path="hello.txt", content="hi\n"), rate_limited(RESETS_AT)],
        gateway=True,
        max_retries=None,
    ),
    "rate_limit_waiting": Scenario(
        "CLAUDE_CODE_RETRY_WATCHDOG=1 and a rejection without x-should-retry: the CLI emits "
        "rate_limit_event rejected and system/api_retry with a delay until the reset, then "
        "waits (killed here after 8 s: no result event).",
        lambda: [
            error(
                429,
                "Rate limited",
                headers=unified_headers("rejected", RESETS_AT),
                times=None,
            )
        ],
        gateway=True,
        max_retries=None,
        env={"CLAUDE_CODE_RETRY_WATCHDOG": "1"},
        timeout=8,
    ),
    "rate_limit_allowed_warning": Scenario(
        "A successful reply carrying allowed_warning usage headers: a rate_limit_event "
        "(status allowed, window allowed_warning) after the reply; exit 0.",
        lambda: [
            reply(
                text("Nearly at the limit, but done."),
                headers=unified_headers(
                    "allowed_warning",
                    RESETS_AT,
                    overage_status=None,
                    overage_disabled_reason=None,
                ),
            )
        ],
        gateway=True,
    ),
}


def capture(name: str, claude: str, out_dir: Path = FIXTURES) -> dict[str, object]:
    """Run one scenario and write its output; returns its manifest entry."""
    sc = SCENARIOS[name]
    with (
        tempfile.TemporaryDirectory(prefix="sbr-capture-") as tmp,
        FakeAnthropic(sc.script()) as api,
    ):
        work = Path(tmp) / "work"
        work.mkdir()
        env = claude_env(
            api.url, Path(tmp) / "home", gateway=sc.gateway, max_retries=sc.max_retries
        )
        env.update(sc.env)
        run = run_claude(claude, sc.prompt, cwd=work, env=env, args=sc.args, timeout=sc.timeout)
        files = sorted(p.name for p in work.iterdir())
        requests = [r.kind for r in api.requests]
    (out_dir / f"{name}.jsonl").write_text(run.stdout)
    env_note = dict(sc.env)
    if sc.max_retries is not None:
        env_note["CLAUDE_CODE_MAX_RETRIES"] = str(sc.max_retries)
    return {
        "description": sc.description,
        "args": list(sc.args),
        "gateway_token": sc.gateway,
        "env": env_note,
        "exit_code": run.returncode,
        "killed_after_s": sc.timeout if run.timed_out else None,
        "seconds": round(run.seconds, 2),
        "requests": requests,
        "files_created": files,
    }


def main(argv: list[str] | None = None) -> int:
    """Capture the named scenarios (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--claude",
        default=os.environ.get("SANDBOXRUN_TEST_CLAUDE")
        or str(
            Path(os.environ.get("SANDBOXRUN_TEST_CACHE", Path.home() / ".cache/sandboxrun-test"))
            / f"claude-code-{PINNED_VERSION}/bin/claude"
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(SCENARIOS))
    opts = parser.parse_args(argv)
    unknown = set(opts.names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    manifest_path = FIXTURES / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    version = claude_version(opts.claude)
    manifest["_captured_with"] = {"claude_code": version, "date": time.strftime("%Y-%m-%d")}
    runs = manifest.setdefault("runs", {})
    for name in opts.names or list(SCENARIOS):
        entry = capture(name, opts.claude)
        runs[name] = entry
        print(f"{name}: exit {entry['exit_code']} in {entry['seconds']}s", file=sys.stderr)
    manifest["runs"] = dict(sorted(runs.items()))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
