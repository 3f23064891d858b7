"""Submodules: named and left out by default, uploaded with --include-submodules, and the
agent's changes inside them kept as a patch per submodule (never applied to the branch).

A real repository with a real submodule (`git submodule add` of a local repository), the real
CLI with the local backend and the stand-in agent; the pack selection on its own too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sbr_testlib import branch_files, edge_error, git

from sandboxrun.sync.pack import select_files

SECRET = "-----BEGIN OPENSSH PRIVATE KEY-----\nsubmodule-secret\n"


@pytest.fixture
def with_sub(repo: Path, tmp_path: Path) -> Path:
    """``repo`` with the submodule ``vendor/lib`` (a .c file, an ignored pattern, a key)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "lib.c").write_text("int x;\n")
    (lib / ".gitignore").write_text("*.o\n")
    (lib / "id_ed25519").write_text(SECRET)  # committed by mistake: must never be uploaded
    git(lib, "add", "-A")
    git(lib, "commit", "-q", "-m", "lib")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add submodule")
    (repo / "vendor" / "lib" / "build.o").write_text("ignored by the submodule\n")
    return repo


def test_selection_takes_the_submodule_files_with_the_same_rules(with_sub):
    (with_sub / ".sandboxrunignore").write_text("vendor/lib/lib.c\n")
    plain = select_files(with_sub)
    assert ("vendor/lib", "submodule or nested git repository") in plain.skipped
    assert not any(f.startswith("vendor/lib/") for f in plain.files)
    sel = select_files(with_sub, submodules=["vendor/lib"])
    assert "vendor/lib/.gitignore" in sel.files
    assert "vendor/lib/build.o" not in sel.files  # the submodule's own .gitignore
    assert "vendor/lib/lib.c" in sel.excluded_by_ignorefile  # the parent's .sandboxrunignore
    assert "vendor/lib/id_ed25519" in sel.excluded_secrets  # the secrets rules
    assert not any(p == "vendor/lib" for p, _ in sel.skipped)


def test_pack_previews_what_an_including_run_uploads(cli, with_sub):
    plain = cli("pack", str(with_sub), "--list")
    assert plain.returncode == 0, plain.stderr
    assert not any(line.startswith("vendor/lib/") for line in plain.stdout.splitlines())
    proc = cli("pack", str(with_sub), "--list", "--include-submodules")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.splitlines()
    assert "vendor/lib/lib.c" in listed and "vendor/lib/build.o" not in listed
    assert "vendor/lib/id_ed25519" not in listed and "vendor/lib/id_ed25519" in proc.stderr
    # not the top of a work tree: a usage error that says what to pass
    sub = cli("pack", str(with_sub / "vendor"), "--list", "--include-submodules")
    assert sub.returncode == 2
    message, hint = edge_error(sub.stderr)
    assert "top of a git work tree" in message and hint


@pytest.mark.slow
def test_without_the_flag_the_run_names_the_submodules_and_the_flag(cli, with_sub):
    proc = cli("run", "--backend", "local", "--dry-run", "--name", "plain", "--prompt", "x")
    assert proc.returncode == 0, proc.stderr
    assert "1 submodule(s) (vendor/lib)" in proc.stderr
    assert "not uploaded" in proc.stderr and "--include-submodules" in proc.stderr


@pytest.mark.slow
def test_a_submodule_not_checked_out_is_refused_before_anything_exists(cli, with_sub):
    git(with_sub, "submodule", "deinit", "-q", "-f", "vendor/lib")
    proc = cli("run", "--backend", "local", "--include-submodules", "--name", "s", "--prompt", "x")
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert "vendor/lib" in message and hint and "submodule update --init" in hint
    assert git(with_sub, "branch", "--list", "sandboxrun/*") == ""
    assert json.loads(cli("status", "--all", "--json").stdout) == []


@pytest.mark.slow
def test_included_submodule_is_seen_and_its_changes_come_back_as_a_patch(cli, with_sub):
    plan = "\n".join(
        [
            "@bash cat vendor/lib/lib.c > seen.txt",
            "@bash ls -a vendor/lib > listing.txt",
            "@write vendor/lib/lib.c int x = 2;",
            "@write vendor/lib/new.c int y;",
            "@write top.txt parent work",
            "",
        ]
    )
    proc = cli("run", "--backend", "local", "--include-submodules", "--name", "sub",
               "--prompt", plan)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # not all of the work is on the branch
    assert "1 submodule(s) included (vendor/lib)" in proc.stderr
    st = cli.status("sub")
    assert st["status"] == "completed_with_refusals", st
    # The parent's work landed; the agent saw the submodule's files, not its secret or .git.
    files = branch_files(with_sub, "sandboxrun/sub")
    assert {"seen.txt", "top.txt"} <= files
    assert git(with_sub, "show", "sandboxrun/sub:seen.txt") == "int x;\n"
    listing = git(with_sub, "show", "sandboxrun/sub:listing.txt").split()
    assert "lib.c" in listing and "id_ed25519" not in listing and ".git" not in listing
    # The branch still records the submodule as the same commit, no files under it.
    assert (
        git(with_sub, "ls-tree", "sandboxrun/sub", "vendor/lib").split()[:3]
        == git(with_sub, "ls-tree", "main", "vendor/lib").split()[:3]
    )
    assert not any(f.startswith("vendor/lib/") for f in files)
    # The changes inside it: reported, and kept as a patch that applies in the submodule.
    assert "vendor/lib/lib.c" in st["error"] and "inside a submodule" in st["error"]
    diff = _artifacts(cli, "sub") / "submodules" / "vendor__lib.diff"
    assert diff.is_file(), st["error"]
    assert f"git -C vendor/lib apply {diff}" in st["error"]
    text = diff.read_text()
    assert "a/lib.c" in text and "b/new.c" in text and "vendor/lib" not in text
    git(with_sub / "vendor" / "lib", "apply", str(diff))
    assert (with_sub / "vendor" / "lib" / "lib.c").read_text() == "int x = 2;\n"
    # Nothing of the submodule's files was left in the run's worktree as a change.
    assert git(with_sub / ".worktrees" / "sub", "status", "--porcelain") == ""


@pytest.mark.slow
def test_the_config_file_includes_them_too(cli, with_sub):
    (with_sub / ".sandboxrun.toml").write_text("include_submodules = true\n")
    git(with_sub, "add", ".sandboxrun.toml")
    git(with_sub, "commit", "-q", "-m", "config")
    proc = cli("run", "--backend", "local", "--name", "cfg", "--prompt",
               "@bash cat vendor/lib/lib.c > seen.txt")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "included (vendor/lib)" in proc.stderr
    assert git(with_sub, "show", "sandboxrun/cfg:seen.txt") == "int x;\n"


def _artifacts(cli, name: str) -> Path:
    return Path(os.environ["SANDBOXRUN_HOME"]) / "artifacts" / cli.status(name)["id"]


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("0", False), ("true", True)])
def test_the_setting_reads_as_a_boolean(value, expected):
    from sandboxrun.config import load_settings

    env = {"SANDBOXRUN_INCLUDE_SUBMODULES": value}
    assert load_settings(None, env=env).include_submodules is expected


def test_a_setting_that_is_not_a_boolean_is_refused():
    from sandboxrun.config import load_settings
    from sandboxrun.errors import ConfigError

    with pytest.raises(ConfigError, match="include_submodules"):
        load_settings(None, env={"SANDBOXRUN_INCLUDE_SUBMODULES": "maybe"}).check()
