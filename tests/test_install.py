"""`scripts/install.sh` on a machine where ~/.local/bin is not on PATH: every step shown, and
the exact line to add for the user's shell. A real install into a copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def copy_repo(dest: Path) -> Path:
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", ".*cache"),
    )
    return dest


SHELL_LINES = {
    "/bin/zsh": """echo 'export PATH="$HOME/.local/bin:$PATH"' >> ~/.zshrc""",
    "/bin/bash": """echo 'export PATH="$HOME/.local/bin:$PATH"' >> ~/.bashrc""",
    "/usr/bin/fish": "fish_add_path ~/.local/bin",
    "/bin/sh": """echo 'export PATH="$HOME/.local/bin:$PATH"' >> ~/.profile""",
}


def test_install_shows_steps_and_the_path_line(tmp_path):
    src = copy_repo(tmp_path / "sandboxrun")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_"))}
    env.update({"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"})

    def install(shell: str) -> str:
        proc = subprocess.run(
            ["bash", "scripts/install.sh"],
            cwd=src,
            env={**env, "SHELL": shell},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = install("/bin/zsh")
    for n, what in enumerate(
        ["Checking Python", "Creating the virtualenv", "Installing sandboxrun", "Linking"], 1
    ):
        assert f"[{n}/4] {what}" in out
    assert f"{home}/.local/bin is not on your PATH" in out
    assert f"  {SHELL_LINES['/bin/zsh']}\n" in out
    linked = home / ".local" / "bin" / "sandboxrun"
    version = subprocess.run([str(linked), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("sandboxrun ")

    # Again (the virtualenv is reused) for the other shells: each gets its own line.
    for shell, line in SHELL_LINES.items():
        if shell != "/bin/zsh":
            again = install(shell)
            assert "already there" in again and "already up to date" in again
            assert f"  {line}\n" in again
    # With the directory on PATH there is no PATH advice.
    env["PATH"] = f"{home}/.local/bin:{env['PATH']}"
    assert "not on your PATH" not in install("/bin/bash")
