"""`scripts/install.sh` on a machine where ~/.local/bin is not on PATH: every step shown, and
the exact line to add for the user's shell. A real install into a copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    # PATH without ~/.local/bin; the Python running the tests is the one to install with
    env.update({"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    env["PYTHON"] = sys._base_executable

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
    steps = ["Checking Python", "Creating the virtualenv", "Installing sandboxrun", "Linking"]
    for n, what in enumerate([*steps, "Checking bubblewrap"], 1):
        assert f"[{n}/5] {what}" in out
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


def _old_python() -> str | None:
    """A Python on this machine too old for sandboxrun (Debian 12's /usr/bin/python3 is 3.11.2)."""
    for path in ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/python3.10"):
        if os.path.exists(path):
            probe = subprocess.run(
                [path, "-c", "import tarfile; print(hasattr(tarfile, 'data_filter'))"],
                capture_output=True,
                text=True,
            )
            if probe.stdout.strip() == "False":
                return path
    return None


def test_install_refuses_a_python_without_tarfile_filters(tmp_path):
    """Python before 3.11.4 cannot unpack safely: install.sh says so before making anything."""
    old = _old_python()
    if old is None:
        pytest.skip("no Python older than 3.11.4 on this machine to try")
    src = copy_repo(tmp_path / "sandboxrun")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHON": old}
    proc = subprocess.run(
        ["bash", "scripts/install.sh"], cwd=src, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "needs Python 3.11.4 or newer (found: Python 3." in proc.stderr
    assert not (src / ".venv").exists()
