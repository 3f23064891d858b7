"""Commands that span repositories say which one: `groups` shows each group's repository,
`integrate GROUP` run from another repository names the group's own repository it acted in,
and `monitor --status` names which monitor it means (no "for every repository"). Real
processes, real git and SQLite; the fake claude on the local backend."""

from __future__ import annotations

import json
from pathlib import Path

from sbr_testlib import CLI, git_project


def test_groups_and_integrate_name_the_repository(cli, repo: Path, tmp_path: Path):
    tasks = tmp_path / "t.toml"
    tasks.write_text('[[task]]\nname = "a"\nprompt = "@write a.txt a\\n@commit a"\n')
    proc = cli("fanout", str(tasks), "--backend", "local", "--name", "grp")
    assert proc.returncode == 0, proc.stderr
    listed = cli("groups")
    assert listed.returncode == 0 and str(repo) in listed.stdout, listed.stdout
    other = git_project(tmp_path / "other", {"x.txt": "x\n"})
    elsewhere = CLI(other)
    proc = elsewhere("integrate", "grp")
    assert proc.returncode == 0, proc.stderr
    assert f"in {repo}" in proc.stdout  # the group's repository, not the one it was run in
    data = json.loads(elsewhere("integrate", "grp", "--json").stdout)
    assert data["repo"] == str(repo)


def test_monitor_status_names_which_monitor(tmp_path: Path):
    proj = git_project(tmp_path / "proj", {"a.txt": "a\n"})
    cli = CLI(proj)
    everywhere = cli("monitor", "--status")
    assert everywhere.returncode == 1
    assert "for every repository" not in everywhere.stdout
    assert "all repositories" in everywhere.stdout and "--repo" in everywhere.stdout
    here = cli("monitor", "--status", "--repo", ".")
    assert here.returncode == 1 and f"repository {proj}" in here.stdout, here.stdout
