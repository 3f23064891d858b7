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
    @fail CODE                 exit with CODE without a result event
    @error TEXT...             end with an error result (is_error true)
    @bash CMD...               run a shell command
    @daemon CMD...             start a shell command in a new session (setsid) and do not wait:
                               the hostile agent's way to leave something running behind it
    @ratelimit EPOCH           emit a rejected rate_limit_event, then hang (like the real CLI)
    @slowstop SECONDS          from now on, take SECONDS to shut down after SIGINT/SIGTERM

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


SLOW_STOP = {"seconds": 0.0}


def on_signal(signum, frame):
    # The real CLI stops when interrupted; it does not print a result.
    time.sleep(SLOW_STOP["seconds"])
    sys.exit(128 + signum)


def main():
    global MODEL, START
    START = time.time()
    args = sys.argv[1:]
    MODEL = args[args.index("--model") + 1] if "--model" in args else "claude-fake-1"
    max_turns = int(args[args.index("--max-turns") + 1]) if "--max-turns" in args else None
    if "--version" in args:
        print("0.0.0-fake (Claude Code)")
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
        elif verb == "fail":
            sys.stderr.write("fake claude: failing on request\n")
            return int(parts[0])
        elif verb == "error":
            result("error_during_execution", True, " ".join(parts))
            return 1
        elif verb == "bash":
            out = subprocess.run(["sh", "-c", " ".join(parts)], capture_output=True, text=True)
            tool(
                "Bash",
                {"command": " ".join(parts)},
                out.stdout + out.stderr,
                is_error=out.returncode != 0,
            )
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
