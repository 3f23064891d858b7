"""The rules every change from a sandbox is checked against (sandboxrun/sync/patchcheck.py).

Pure: the applier (sync/replay.py) feeds these the changes of every commit the sandbox sent;
tests/test_collect.py checks the same rules end to end on real repositories.
"""

from __future__ import annotations

import pytest

from sandboxrun.sync.patchcheck import FileChange, PatchCheck, check_changes

# ------------------------------------------------------------------------------------------
# Checking rules


def _check(path: str, **kw: object) -> tuple[bool, list[str]]:
    check = check_changes([FileChange(path=path, status="added", new_mode="100644")], **kw)
    return check.ok, check.sensitive


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a/../b", "..", ".git", ".git/x", "x/.GIT/y", ".git./x", ".git /x", "GIT~1/x",
     ".git::$INDEX_ALLOCATION/x", ".g\u200cit/x", "a\\..\\b", ".git\\config", "\\\\server\\x", "C:/x", "a//b", "./a", "nul\0byte",
     "esc\x1b[31m", "c1\x9bcontrol"],
)  # fmt: skip
def test_paths_never_allowed(path: str) -> None:
    """Escapes, .git in any disguise, and control or invisible characters."""
    assert _check(path, allow_sensitive=True)[0] is False


@pytest.mark.parametrize(
    ("path", "sensitive"),
    [
        (".claude/settings.json", True),
        (".Claude/Settings.json", True),
        ("pkg/.claude/commands/x.md", True),
        (".claude", True),
        ("sub/.mcp.json", True),
        (".github/workflows/ci.yml", True),
        (".github/CODEOWNERS", True),
        ("docs/.github/x", False),
        (".gitlab-ci.yml", True),
        (".husky/pre-commit", True),
        ("web/.husky/pre-push", True),
        (".pre-commit-config.yaml", True),
        ("sub/.gitattributes", True),
        (".gitmodules", True),
        (".vscode/tasks.json", True),
        ("Jenkinsfile", True),
        ("src/claude.py", False),
        ("docs/mcp.json", False),
        ("CLAUDE.md", True),
        ("docs/CLAUDE.md", True),
        ("claude.md.txt", False),
        (".sandboxrun.toml", True),
        (".sandboxruninclude", True),
        ("sub/.envrc", True),
        (".npmrc", True),
        (".yarnrc.yml", True),
        (".bashrc", True),
        ("home/.bashrc", False),
        ("Makefile", False),
        ("package.json", False),
        ("tab\tname.txt", False),
        ("back\\slash.txt", False),
        (".gitignore", False),
    ],
)
def test_sensitive_paths(path: str, sensitive: bool) -> None:
    """The sensitive list matches by component, case-insensitively."""
    ok, listed = _check(path)
    assert ok is not sensitive
    assert (listed == [path]) is sensitive
    assert _check(path, allow_sensitive=True)[0] is True


def test_symlink_rules() -> None:
    """Links inside the tree are warned about; outside, into .git or into sensitive places not."""

    def link(path: str, target: str) -> PatchCheck:
        return check_changes(
            [FileChange(path=path, status="added", new_mode="120000", symlink_target=target)]
        )

    inside = link("docs/latest", "../src/app.py")
    assert inside.ok and any("docs/latest" in w for w in inside.warnings)
    assert not link("a/b/c", "../../../x").ok
    assert not link("x", "/etc/passwd").ok
    assert not link("x", "sub/../../x").ok
    assert not link("x", "src/../.git/config").ok
    assert not link("x", "").ok
    to_sensitive = link("cfg", ".claude/settings.json")
    assert not to_sensitive.ok and to_sensitive.only_sensitive
    under_sensitive = check_changes(
        [FileChange(path=".claude/x", status="added", new_mode="120000", symlink_target="y")],
        allow_sensitive=True,
    )
    assert not under_sensitive.ok
    unknown = check_changes([FileChange(path="x", status="modified", old_mode="100644",
                                        new_mode="120000")])  # fmt: skip
    assert not unknown.ok


def test_gitlinks_modes_and_executables() -> None:
    """Gitlinks and odd modes are refused; executables are warned about."""
    check = check_changes(
        [
            FileChange(path="sub", status="added", new_mode="160000"),
            FileChange(path="weird", status="added", new_mode="040000"),
            FileChange(path="tool", status="modified", old_mode="100644", new_mode="100755"),
            FileChange(path="old-sub", status="deleted", old_mode="160000"),
        ]
    )
    assert {p for p, _ in check.refused} == {"sub", "weird"}
    assert not check.only_sensitive
    assert any("tool" in w and "executable" in w for w in check.warnings)
    assert any("old-sub" in w for w in check.warnings)
