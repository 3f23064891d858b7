#!/usr/bin/env python3
"""A stand-in for `claude -p ... --output-format stream-json --verbose`, owned by the tests.

It reads the prompt on stdin and performs the directives it finds there, one per line, emitting
the same stream-json events the real CLI emits (system/init, assistant tool_use, user
tool_result, assistant text, result). Directives, because the prompt is the one input that
reaches the agent on every backend:

    @write PATH TEXT...        create/overwrite a file (\\n in TEXT becomes a newline)
    @append PATH TEXT...       append a line
    @delete PATH               remove a file
    @rename OLD NEW            rename a file
    @binary PATH N             write N pseudo-random bytes (with NULs)
    @chmod PATH MODE           e.g. 755
    @symlink PATH TARGET       create a symlink
    @commit MESSAGE...         git add -A && git commit -m MESSAGE
    @sleep SECONDS             sleep (interruptible: SIGINT ends the run)
    @hang                      wait until a signal ends the run (a test never races its end)
    @fail CODE                 exit with CODE without a result event
    @error TEXT...             end with an error result (is_error true; $VARS expanded)
    @bash CMD...               run a shell command
    @daemon CMD...             start a shell command in a new session (setsid) and do not wait:
                               the hostile agent's way to leave something running behind it
    @ratelimit EPOCH           emit a rejected rate_limit_event, then hang (like the real CLI)
    @slowstop SECONDS          from now on, take SECONDS to shut down after SIGINT/SIGTERM
    @stopgate PATH             from now on, after SIGINT/SIGTERM wait until PATH exists to exit
    @env                       print the environment as plain KEY=VALUE lines (stdout, stderr)
    @garbage KIND [ARG]        emit malformed output; KIND is one of:
                                 numbers  final result with lists/objects/strings for numbers
                                 coststr  final result with numbers as strings
                                 resets   rate-limit events and a result with absurd reset times
                                 huge MiB one assistant line of MiB mebibytes
                                 utf8     lines of invalid UTF-8
                                 nonjson  plain text, JSON that is not an object, broken JSON
                                 deep     JSON nested far deeper than decoders allow
                                 shapes   events whose fields have the wrong container types
                               numbers and coststr end the run (exit 0) after their result

`auth status` answers "logged in" as the real CLI does (JSON, exit 0).

Only the standard library: it runs wherever python3 exists (local dirs, emulated sandboxes).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

SESSION_ID = str(uuid.uuid4())
STATE = {"turns": 0, "cost": 0.0}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def assistant(content):
    emit(
        {
            "type": "assistant",
            "session_id": SESSION_ID,
            "message": {
                "id": f"msg_{uuid.uuid4().hex[:12]}",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": content,
            },
        }
    )


def tool(name, tool_input, result_text, is_error=False):
    STATE["turns"] += 1
    STATE["cost"] += 0.0012
    tid = f"toolu_{uuid.uuid4().hex[:12]}"
    assistant([{"type": "tool_use", "id": tid, "name": name, "input": tool_input}])
    emit(
        {
            "type": "user",
            "session_id": SESSION_ID,
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": tid,
                        "content": result_text,
                        "is_error": is_error,
                    }
                ],
            },
        }
    )


def result(subtype="success", is_error=False, text="done"):
    emit(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": int((time.time() - START) * 1000),
            "duration_api_ms": 5,
            "num_turns": STATE["turns"] + 1,
            "result": text,
            "session_id": SESSION_ID,
            "total_cost_usd": round(STATE["cost"] + 0.0005, 6),
            "usage": {"input_tokens": 10, "output_tokens": 20},
            "permission_denials": [],
            "terminal_reason": "completed" if not is_error else subtype,
        }
    )


SLOW_STOP = {"seconds": 0.0, "gate": None}


def on_signal(signum, frame):
    # The real CLI stops when interrupted; it does not print a result.
    time.sleep(SLOW_STOP["seconds"])
    while SLOW_STOP["gate"] and not os.path.exists(SLOW_STOP["gate"]):
        time.sleep(0.02)
    sys.exit(128 + signum)


def garbage(kind, arg):
    """Malformed output of every kind the driver must survive; True ends the run."""
    out = sys.stdout.buffer
    if kind == "numbers":
        emit(
            {
                "type": "system",
                "subtype": "init",
                "session_id": [1],
                "model": {"m": 1},
                "tools": 5,
                "cwd": None,
            }
        )
        emit(
            {
                "type": "result",
                "subtype": 7,
                "is_error": "yes",
                "num_turns": [1, 2],
                "total_cost_usd": {"usd": 1},
                "duration_ms": "soon",
                "session_id": {"id": 1},
                "result": ["a", "b"],
                "terminal_reason": None,
                "api_error_status": [500],
            }
        )
        out.write(
            b'{"type": "result", "num_turns": 1' + b"0" * 400 + b', "total_cost_usd": 1e400}\n'
        )
        out.flush()
        return True
    if kind == "coststr":
        emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "num_turns": "3",
                "total_cost_usd": "0.25",
                "duration_ms": "1200",
                "session_id": SESSION_ID,
                "result": "done",
            }
        )
        return True
    if kind == "resets":
        for reset in (1e20, -5, "tomorrow", [1], 10**30):
            emit(
                {
                    "type": "rate_limit_event",
                    "rate_limit_info": {
                        "status": "allowed_warning",
                        "resetsAt": reset,
                        "rateLimitType": {"x": 1},
                    },
                }
            )
        emit(
            {
                "type": "rate_limit_event",
                "rate_limit_info": {"status": "rejected", "resetsAt": 1e20},
            }
        )
        emit(
            {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed", "resetsAt": None}}
        )
        emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "num_turns": 1,
                "result": "Claude AI usage limit reached|" + "9" * 40,
            }
        )
        emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": True,
                "num_turns": 1,
                "result": "You've hit your limit " * 5000 + "resets 3am",
            }
        )
        return False
    if kind == "huge":
        size = int(float(arg or 50) * 1024 * 1024)
        chunk = "All work and no play makes Jack a dull boy. "
        text = (chunk * (size // len(chunk) + 1))[:size]
        assistant([{"type": "text", "text": text}])
        return False
    if kind == "utf8":
        out.write(b"\xff\xfe not utf-8 \xc3\x28 \xed\xa0\x80\n")
        out.write(
            b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "caf\xe9"}]}}\n'
        )
        out.flush()
        return False
    if kind == "nonjson":
        for line in (
            "hello, this is not JSON",
            "[1, 2, 3]",
            "null",
            '"a string"',
            "{broken",
            "42",
            '{"type": null}',
            '{"type": {"nested": 1}}',
        ):
            out.write(line.encode() + b"\n")
        out.flush()
        return False
    if kind == "deep":
        out.write(b"[" * 200000 + b"]" * 200000 + b"\n")
        out.write(b'{"type": "result", "result": ' + b"[" * 100000 + b"]" * 100000 + b"}\n")
        out.flush()
        return False
    if kind == "shapes":
        for obj in (
            {"type": "assistant", "message": []},
            {"type": "assistant", "message": {"content": "just a string"}},
            {
                "type": "assistant",
                "message": {
                    "content": [
                        1,
                        None,
                        "x",
                        {"type": "text", "text": {"a": 1}},
                        {"type": "tool_use", "name": ["Bash"], "input": [1]},
                    ]
                },
            },
            {"type": "user", "message": {"content": {"type": "tool_result"}}},
            {
                "type": "user",
                "message": {
                    "content": [{"type": "tool_result", "content": {"x": 1}, "is_error": "no"}]
                },
            },
            {"type": "rate_limit_event", "rate_limit_info": [1, 2]},
            {"type": "system", "subtype": {"a": 1}},
            {"type": "system", "subtype": "init", "tools": "Bash,Write"},
        ):
            emit(obj)
        return False
    raise SystemExit(f"unknown garbage kind {kind}")


def main():
    global MODEL, START
    START = time.time()
    args = sys.argv[1:]
    MODEL = args[args.index("--model") + 1] if "--model" in args else "claude-fake-1"
    max_turns = int(args[args.index("--max-turns") + 1]) if "--max-turns" in args else None
    if "--version" in args:
        print("0.0.0-fake (Claude Code)")
        return 0
    if args[:2] == ["auth", "status"]:
        # like the real CLI: JSON, exit 0 when logged in (the tests' machine is, by API key)
        print(json.dumps({"loggedIn": True, "authMethod": "api_key"}))
        return 0
    if args[:1] == ["update"]:
        print("Claude Code is up to date (0.0.0-fake)")
        return 0
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    prompt = sys.stdin.read()
    emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": SESSION_ID,
            "cwd": os.getcwd(),
            "model": MODEL,
            "tools": ["Bash", "Write", "Edit", "Read"],
            "permissionMode": "bypassPermissions",
            "claude_code_version": "0.0.0-fake",
            "future_field": {"tolerated": True},
        }
    )
    emit({"type": "brand_new_event_type", "whatever": 1})
    for line in prompt.splitlines():
        line = line.strip()
        if not line.startswith("@"):
            continue
        if max_turns is not None and STATE["turns"] >= max_turns:
            result("error_max_turns", True, "")
            return 1
        verb, _, rest = line[1:].partition(" ")
        parts = rest.split(" ")
        if verb == "write":
            path, text = parts[0], " ".join(parts[1:]).replace("\\n", "\n")
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text + ("\n" if not text.endswith("\n") else ""))
            tool("Write", {"file_path": os.path.abspath(path), "content": text}, "File written")
        elif verb == "append":
            with open(parts[0], "a") as fh:
                fh.write(" ".join(parts[1:]) + "\n")
            tool("Edit", {"file_path": os.path.abspath(parts[0])}, "File edited")
        elif verb == "delete":
            os.remove(parts[0])
            tool("Bash", {"command": f"rm {parts[0]}"}, "")
        elif verb == "rename":
            os.makedirs(os.path.dirname(parts[1]) or ".", exist_ok=True)
            shutil.move(parts[0], parts[1])
            tool("Bash", {"command": f"mv {parts[0]} {parts[1]}"}, "")
        elif verb == "binary":
            rng = random.Random(parts[0])
            data = bytes(rng.randrange(256) for _ in range(int(parts[1]))) + b"\0\0\xff"
            os.makedirs(os.path.dirname(parts[0]) or ".", exist_ok=True)
            with open(parts[0], "wb") as fh:
                fh.write(data)
            tool("Write", {"file_path": os.path.abspath(parts[0])}, "Binary written")
        elif verb == "chmod":
            os.chmod(parts[0], int(parts[1], 8))
            tool("Bash", {"command": f"chmod {parts[1]} {parts[0]}"}, "")
        elif verb == "symlink":
            os.symlink(parts[1], parts[0])
            tool("Bash", {"command": f"ln -s {parts[1]} {parts[0]}"}, "")
        elif verb == "commit":
            out = subprocess.run(
                ["sh", "-c", 'git add -A && git commit -q -m "$1"', "sh", " ".join(parts)],
                capture_output=True,
                text=True,
            )
            tool(
                "Bash",
                {"command": "git commit"},
                out.stdout + out.stderr,
                is_error=out.returncode != 0,
            )
        elif verb == "sleep":
            tool("Bash", {"command": f"sleep {parts[0]}"}, "")
            end = time.time() + float(parts[0])
            while time.time() < end:
                time.sleep(0.05)
        elif verb == "hang":
            tool("Bash", {"command": "sleep infinity"}, "")
            while True:
                time.sleep(0.05)
        elif verb == "fail":
            sys.stderr.write("fake claude: failing on request\n")
            return int(parts[0])
        elif verb == "error":
            result("error_during_execution", True, os.path.expandvars(" ".join(parts)))
            return 1
        elif verb == "bash":
            out = subprocess.run(["sh", "-c", " ".join(parts)], capture_output=True, text=True)
            tool(
                "Bash",
                {"command": " ".join(parts)},
                out.stdout + out.stderr,
                is_error=out.returncode != 0,
            )
        elif verb == "env":
            for key, value in sorted(os.environ.items()):
                print(f"{key}={value}", flush=True)
                print(f"{key}={value}", file=sys.stderr, flush=True)
        elif verb == "garbage":
            if garbage(parts[0], parts[1] if len(parts) > 1 else None):
                return 0
        elif verb == "daemon":
            proc = subprocess.Popen(
                ["sh", "-c", " ".join(parts)],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            tool("Bash", {"command": f"setsid {' '.join(parts)} &"}, f"started pid {proc.pid}")
        elif verb == "slowstop":
            SLOW_STOP["seconds"] = float(parts[0])
        elif verb == "stopgate":
            SLOW_STOP["gate"] = parts[0]
        elif verb == "ratelimit":
            emit(
                {
                    "type": "rate_limit_event",
                    "rate_limit_info": {
                        "status": "rejected",
                        "resetsAt": int(parts[0]),
                        "rateLimitType": "five_hour",
                    },
                }
            )
            while True:
                time.sleep(0.1)
    assistant([{"type": "text", "text": "All done."}])
    result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
