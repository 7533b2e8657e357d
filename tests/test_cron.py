"""make cron-install / cron-remove: the crontab line is added once, removed, other lines kept.

The real `crontab` would edit this machine's cron table (root's, here), so a stand-in
`crontab` on PATH keeps the table in a file behind the same interface: `crontab -l`
prints it (exit 1 and "no crontab for <user>" when there is none), `crontab -` replaces
it with stdin. Everything else (make, watchdog.py, the STATE_DIR lookup) is real.
"""

import os
import stat

import pytest

FAKE_CRONTAB = """#!/bin/sh
table="$CRONTAB_FILE"
case "$1" in
  -l) [ -f "$table" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat "$table";;
  -) cat > "$table";;
  *) echo "usage: crontab -l | crontab -" >&2; exit 1;;
esac
"""


@pytest.fixture
def cron_env(project, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "crontab"
    fake.write_text(FAKE_CRONTAB)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    table = tmp_path / "crontab.txt"
    return table, {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CRONTAB_FILE": str(table)}


def test_cron_install_adds_one_line_that_runs_the_watchdog_into_state_dir_logs(project, cron_env):
    table, env = cron_env
    table.write_text("0 3 * * * /usr/local/bin/backup\n")
    for _ in range(2):  # idempotent
        result = project.make("cron-install", **env)
        assert result.returncode == 0, result.stderr
    lines = table.read_text().splitlines()
    assert lines[0] == "0 3 * * * /usr/local/bin/backup"
    [ours] = [line for line in lines if "tweakops-watchdog" in line]
    assert len(lines) == 2
    assert ours.startswith("* * * * * cd ") and "make -s watchdog" in ours
    assert f">> {project.state / 'logs' / 'cron.log'} 2>&1" in ours
    assert (project.state / "logs").is_dir()


def test_cron_remove_drops_only_our_line_and_works_without_a_crontab(project, cron_env):
    table, env = cron_env
    result = project.script("watchdog", "--cron", "remove", **env)  # no crontab yet
    assert result.returncode == 0, result.stderr
    assert table.read_text() == ""
    table.write_text("0 3 * * * /usr/local/bin/backup\n")
    assert project.script("watchdog", "--cron", "install", **env).returncode == 0
    result = project.make("cron-remove", **env)
    assert result.returncode == 0, result.stderr
    assert table.read_text() == "0 3 * * * /usr/local/bin/backup\n"


def test_cron_install_without_crontab_says_what_to_do(project, tmp_path):
    empty = tmp_path / "nobin"
    empty.mkdir()
    python_dir = os.path.dirname(os.path.realpath(os.sys.executable))
    result = project.script("watchdog", "--cron", "install", PATH=f"{empty}{os.pathsep}{python_dir}")
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "crontab not found" in line and "apt-get install cron" in line and "systemd timer" in line
