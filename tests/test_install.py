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


# -- scripts/lib/apt.sh: install a Debian package, with sudo when not root, or say how -----------

SCRIPTS = ROOT / "scripts"


def _path_without(tmp: Path, *missing: str) -> str:
    """A PATH with every program of this machine's PATH but ``missing`` (symlinks in ``tmp``)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True)
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if name not in missing and not target.exists() and not target.is_symlink():
                target.symlink_to(os.path.join(directory, name))
    return str(bin_dir)


def _run(argv: list[str], path: str, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)


def _public_copy() -> Path:
    """``scripts/`` copied where an ordinary user can read it (pytest's tmp_path is root's)."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="sbr-apt-"))
    top.chmod(0o755)
    shutil.copytree(SCRIPTS, top / "scripts")
    return top


@pytest.mark.parametrize(
    ("script", "missing", "manual"),
    [
        ("install_bwrap.sh", ("bwrap",), "sudo apt-get install -y bubblewrap"),
        (
            "install_chromium.sh",
            ("chromium", "chromedriver"),
            "sudo apt-get install -y chromium chromium-driver",
        ),
    ],  # fmt: skip
)
def test_install_scripts_say_what_to_run_without_apt(tmp_path, script, missing, manual):
    """No apt-get on the machine: nothing is tried, the command to run by hand is said, exit 1."""
    path = _path_without(tmp_path, *missing, "apt-get")
    proc = _run(["bash", str(SCRIPTS / script)], path)
    assert proc.returncode == 1, proc
    assert "Installing" not in proc.stdout
    assert "cannot install" in proc.stderr and f"Install it yourself: {manual}" in proc.stderr


def test_apt_install_without_root_or_sudo_tries_nothing(tmp_path):
    """As an ordinary user without password-less sudo the helper returns 2 and runs no apt-get;
    the bwrap script then says what to run."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to run as the ordinary user 'tuser'")
    try:
        pwd.getpwnam("tuser")
    except KeyError:
        pytest.skip("no ordinary user 'tuser' on this machine")
    top = _public_copy()
    try:
        helper = top / "scripts" / "lib" / "apt.sh"
        proc = _run(["bash", "-c", f'. {helper}; apt_install bubblewrap why bubblewrap; echo "rc=$?"'],
                    "/usr/bin:/bin", user="tuser")  # fmt: skip
        assert proc.stdout.strip() == "rc=2", proc
        path = _path_without(top / "t", "bwrap")
        (top / "t").chmod(0o755)
        proc = _run(["bash", str(top / "scripts" / "install_bwrap.sh")], path, user="tuser")
        assert proc.returncode == 1, proc
        assert "Install it yourself: sudo apt-get install -y bubblewrap" in proc.stderr
    finally:
        shutil.rmtree(top)


def test_apt_install_as_root_installs_and_says_so(tmp_path):
    """As root with apt-get: the real apt-get installs bubblewrap (already there: a no-op), and
    install_bwrap.sh, not finding bwrap on its PATH, says it installed it."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("needs root and apt-get")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed here (the test installs nothing new)")
    proc = _run(["bash", "-c", f'. {SCRIPTS}/lib/apt.sh; apt_install bubblewrap "a test" bubblewrap'],
                os.environ["PATH"])  # fmt: skip
    assert proc.returncode == 0, proc
    assert proc.stdout == "Installing bubblewrap with apt-get (a test) ...\n"
    proc = _run(["bash", str(SCRIPTS / "install_bwrap.sh")], _path_without(tmp_path, "bwrap"))
    assert proc.returncode == 0, proc
    assert "Installing bubblewrap with apt-get" in proc.stdout
    assert "bubblewrap installed" in proc.stdout
