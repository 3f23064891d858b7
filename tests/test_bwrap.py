"""The bubblewrap plan, offline: the isolation decision, the argv, the agent's environment."""

from __future__ import annotations

import pytest

from sandboxrun.sandbox.backends.bwrap import (
    AGENT_UID,
    Confinement,
    Exposure,
    HostView,
    RootEntry,
    agent_environment,
    build_argv,
    decide_isolation,
    executable_exposure,
    find_bwrap,
    passwd_files,
)

HOST = HostView(
    root_entries=(
        RootEntry("usr"),
        RootEntry("bin", symlink="usr/bin"),
        RootEntry("etc"),
        RootEntry("opt"),
    ),
    masked_files=("/etc/shadow",),
    masked_dirs=("/etc/ssl/private",),
    extra_ro=("/run/systemd/resolve/stub-resolv.conf",),
)
SB = "/home/u/.local/share/sandboxrun/sandboxes/abc/home"


def conf(**kw) -> Confinement:
    base = dict(
        host=HOST,
        sandbox_dir=SB,
        readonly_inside=(f"{SB}/.sandboxrun",),
        hidden=("/home/u/.local/share/sandboxrun", "/home/u", "/opt/work/repo"),
        exposed=Exposure(
            binds=("/opt/claude/bin",),
            symlinks=(("../lib/claude", "/home/u/.local/bin/claude"), ("x", "/usr/bin/claude")),
        ),
        ro_files=(("/x/passwd", "/etc/passwd"),),
        env={"HOME": SB, "PATH": "/usr/bin"},
        chdir=f"{SB}/repo",
    )
    base.update(kw)
    return Confinement(**base)


def pairs(argv: list[str], flag: str, n: int = 2) -> list[tuple[str, ...]]:
    """Every occurrence of ``flag`` with its ``n`` arguments, in order."""
    return [tuple(argv[i + 1 : i + 1 + n]) for i, a in enumerate(argv) if a == flag]


def before(argv: list[str], first: list[str], second: list[str]) -> bool:
    """Whether the ``first`` option group comes before the ``second`` one."""

    def index(group):
        for i in range(len(argv)):
            if argv[i : i + len(group)] == group:
                return i
        raise AssertionError(f"{group} not in argv")

    return index(first) < index(second)


@pytest.mark.parametrize(
    ("system", "bwrap", "no_iso", "isolated", "refused", "warned"),
    [
        ("Linux", "/usr/bin/bwrap", False, True, False, False),
        ("Linux", None, False, False, True, False),
        ("Linux", None, True, False, False, True),
        ("Linux", "/usr/bin/bwrap", True, False, False, True),
        ("Darwin", None, False, False, False, True),
        ("Darwin", None, True, False, False, True),
    ],
)
def test_isolation_decision(system, bwrap, no_iso, isolated, refused, warned):
    d = decide_isolation(system, bwrap, no_iso)
    assert d.isolated is isolated
    assert (d.refusal is not None) is refused
    assert (d.warning is not None) is warned
    if system == "Darwin":
        assert "NOT isolated on Darwin" in d.warning
    if warned and system == "Linux":
        assert "--no-isolation" in d.warning


def test_argv_is_a_non_root_user_in_its_own_namespaces_with_the_network():
    argv = build_argv(conf(), ["claude", "-p"], bwrap="/usr/bin/bwrap")
    assert argv[0] == "/usr/bin/bwrap"
    assert argv[-3:] == ["--", "claude", "-p"]
    assert pairs(argv, "--uid", 1) == [(str(AGENT_UID),)] and AGENT_UID != 0
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                 "--disable-userns", "--clearenv"):  # fmt: skip
        assert flag in argv
    assert "--unshare-net" not in argv and "--unshare-all" not in argv
    assert "--share-net" not in argv  # shared by default
    assert "--new-session" not in argv  # the agent stays in our process group
    assert "--new-session" in build_argv(conf(new_session=True), ["x"])
    host = HostView(root_entries=(), supports_disable_userns=False)
    assert "--disable-userns" not in build_argv(conf(host=host), ["x"])


def test_argv_binds_only_system_trees_and_the_sandbox_writable():
    argv = build_argv(conf(), ["x"])
    writable = pairs(argv, "--bind")
    assert writable == [(SB, SB)]
    ro = pairs(argv, "--ro-bind")
    assert ("/usr", "/usr") in ro and ("/etc", "/etc") in ro
    assert ("usr/bin", "/bin") in pairs(argv, "--symlink")
    assert all(not src.startswith("/home") for src, _ in ro if src != f"{SB}/.sandboxrun")
    # Private /tmp, /proc, /dev; no /run or /var of this machine.
    assert ("/tmp",) in pairs(argv, "--tmpfs", 1)
    assert "/run" not in [src for src, _ in ro] and "/var" not in [src for src, _ in ro]
    # Secrets of the system are masked after /etc is bound.
    assert ("/dev/null", "/etc/shadow") in ro
    assert before(argv, ["--ro-bind", "/etc", "/etc"], ["--ro-bind", "/dev/null", "/etc/shadow"])
    assert ("/etc/ssl/private",) in pairs(argv, "--tmpfs", 1)
    assert ("/run/systemd/resolve/stub-resolv.conf",) * 2 in ro


def test_control_dir_is_read_only_on_top_of_the_writable_sandbox():
    argv = build_argv(conf(), ["x"])
    ctl = f"{SB}/.sandboxrun"
    assert before(argv, ["--bind", SB, SB], ["--ro-bind", ctl, ctl])


def test_user_paths_inside_system_trees_are_hidden_then_exposures_bound():
    argv = build_argv(conf(), ["x"])
    tmpfs = [p for (p,) in pairs(argv, "--tmpfs", 1)]
    # /opt/work/repo is under /opt (bound): hidden. /home/u is not bound at all: no tmpfs.
    assert "/opt/work/repo" in tmpfs
    assert "/home/u" not in tmpfs
    assert before(argv, ["--tmpfs", "/opt/work/repo"], ["--ro-bind", "/opt/claude/bin"])
    assert before(argv, ["--ro-bind", "/opt/claude/bin"], ["--bind", SB, SB])


def test_sandboxrun_home_in_a_system_tree_is_hidden_but_the_sandbox_stays():
    sb = "/opt/sbr/sandboxes/abc/home"
    argv = build_argv(conf(sandbox_dir=sb, readonly_inside=(), hidden=("/opt/sbr",)), ["x"])
    assert before(argv, ["--tmpfs", "/opt/sbr"], ["--bind", sb, sb])


def test_environment_is_an_allow_list_with_a_private_home():
    host = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/root",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "CLAUDE_CODE_OAUTH_TOKEN": "tok",
        "CLAUDE_CONFIG_DIR": "/root/.claude",
        "IS_SANDBOX": "1",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "gh",
        "SSH_AUTH_SOCK": "/run/user/0/ssh",
        "GIT_DIR": "/root/repo/.git",
        "E2B_API_KEY": "e2b",
        "LC_ALL": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    env = agent_environment(host, SB, {"EXTRA": "1", "HOME": "/evil"})
    assert env["HOME"] == SB and env["CLAUDE_CONFIG_DIR"] == f"{SB}/.claude"
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-x" and env["CLAUDE_CODE_OAUTH_TOKEN"] == "tok"
    assert env["LC_ALL"] == "C.UTF-8" and env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["EXTRA"] == "1" and env["TMPDIR"] == "/tmp"
    for gone in ("IS_SANDBOX", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "SSH_AUTH_SOCK",
                 "GIT_DIR", "E2B_API_KEY"):  # fmt: skip
        assert gone not in env


def test_passwd_has_only_root_agent_and_nobody():
    passwd, group = passwd_files(SB)
    names = [line.split(":")[0] for line in passwd.splitlines()]
    assert names == ["root", "agent", "nobody"]
    assert f"agent:x:{AGENT_UID}:{AGENT_UID}:sandboxrun agent:{SB}:/bin/sh" in passwd
    assert "agent:x:1000:" in group


def test_executable_exposure_shows_the_executable_not_its_neighbours():
    # npm global install: bin/claude -> ../lib/node_modules/@anthropic-ai/claude-code/cli.js
    link = "/root/.npm/bin/claude"
    npm = executable_exposure(
        [(link, "../lib/node_modules/@anthropic-ai/claude-code/cli.js")],
        "/root/.npm/lib/node_modules/@anthropic-ai/claude-code/cli.js",
    )
    assert npm.binds == ("/root/.npm/lib/node_modules/@anthropic-ai/claude-code",)
    assert npm.symlinks == (("../lib/node_modules/@anthropic-ai/claude-code/cli.js", link),)
    # The pinned test install: the native binary inside the npm package's bin/.
    pinned = executable_exposure(
        [("/c/bin/claude", "../node_modules/@anthropic-ai/claude-code/bin/claude.exe")],
        "/c/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
    )
    assert pinned.binds == ("/c/node_modules/@anthropic-ai/claude-code",)
    # The native installer: ~/.local/bin/claude -> ~/.local/share/claude/versions/2.1; the
    # rest of ~/.local/bin (the user's own scripts) stays hidden.
    native = executable_exposure(
        [("/h/.local/bin/claude", "/h/.local/share/claude/versions/2.1")],
        "/h/.local/share/claude/versions/2.1",
    )
    assert native.binds == ("/h/.local/share/claude/versions/2.1",)
    assert native.symlinks == (("/h/.local/share/claude/versions/2.1", "/h/.local/bin/claude"),)
    # A plain file: itself only.
    plain = executable_exposure([], "/work/tools/claude")
    assert plain == Exposure(binds=("/work/tools/claude",))


def test_exposure_links_are_recreated_outside_system_trees_only():
    argv = build_argv(conf(), ["x"])
    links = pairs(argv, "--symlink")
    assert ("../lib/claude", "/home/u/.local/bin/claude") in links
    assert ("x", "/usr/bin/claude") not in links  # /usr is bound: the link is there already
    assert before(argv, ["--ro-bind", "/opt/claude/bin"], ["--symlink", "../lib/claude"])


def test_find_bwrap_honours_the_override(tmp_path):
    assert find_bwrap({"SANDBOXRUN_BWRAP": str(tmp_path / "none"), "PATH": ""}) is None
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_bwrap({"SANDBOXRUN_BWRAP": str(fake)}) == str(fake)
    assert find_bwrap({"PATH": str(tmp_path)}) == str(fake)
