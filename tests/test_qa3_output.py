"""Every command that writes a file the user names refuses an existing one unless --force, as
`plan split -o` does: `report -o` overwrote it silently. Real processes, git and SQLite; the
fake claude on the local backend for a real group."""

from __future__ import annotations

from pathlib import Path

from sbr_testlib import edge_error


def test_report_output_refuses_an_existing_file_unless_force(cli, tmp_path: Path):
    out = tmp_path / "report.md"
    out.write_text("my notes\n")
    proc = cli("report", "ghost", "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    message, hint = edge_error(proc.stderr)
    assert f"{out} already exists" in message and hint and "--force" in hint
    assert out.read_text() == "my notes\n"  # untouched
    assert "--force" in cli("report", "--help").stdout

    tasks = tmp_path / "t.toml"
    tasks.write_text('[[task]]\nname = "a"\nprompt = "@write a.txt a\\n@commit a"\n')
    proc = cli("fanout", str(tasks), "--backend", "local", "--name", "grp")
    assert proc.returncode == 0, proc.stderr
    proc = cli("report", "grp", "-o", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert "grp" in out.read_text() and "my notes" not in out.read_text()
    fresh = tmp_path / "new.md"
    assert cli("report", "grp", "-o", str(fresh)).returncode == 0 and fresh.is_file()
