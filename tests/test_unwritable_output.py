"""Output that cannot be written (a full disk: `> /dev/full`) never stops or falsifies a run,
and a command whose report was lost does not exit 0 (attack on issue 24: the run did all its
work, then died on printing with exit 2, "refused before anything was touched"). Real
subprocesses writing into the real /dev/full, on the small chain in tests/chains/steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import STEPS
from test_runs import at, latest_run, whole

from docex_migrate.chain import SCRIPT_LOCATION_ENV

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
TENANTS = ["f0", "f1", "f2"]


def into_full_disk(env, *args: str, stream: str) -> subprocess.CompletedProcess[str]:
    """The command with ``stream`` (stdout or stderr) on /dev/full; the other one captured."""
    environ = {**os.environ, "DOCEX_CONFIG": str(env.config_file), SCRIPT_LOCATION_ENV: str(STEPS)}
    with open("/dev/full", "w") as full:
        streams = (
            {"stdout": full, "stderr": subprocess.PIPE} if stream == "stdout" else {"stdout": subprocess.PIPE, "stderr": full}
        )
        return subprocess.run(
            [sys.executable, "-m", "docex_migrate", *args], cwd=env.workdir, env=environ, text=True, timeout=120, **streams
        )


def test_a_report_written_to_a_full_disk_is_said_lost_and_the_run_is_whole(steps):
    at(steps, TENANTS, "r1")
    done = into_full_disk(steps, "upgrade", "--all-tenants", "--json", stream="stdout")
    assert done.returncode == 1, done.stderr
    assert "stdout could not be written (No space left on device)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "error:" not in done.stderr, done.stderr
    assert {whole(steps, t) for t in TENANTS} == {"r3"}
    run = latest_run()
    assert run["state"] == "finished" and run["counts"] == {"upgraded": 3}


def test_stderr_on_a_full_disk_never_stops_the_run(steps):
    at(steps, TENANTS, "r1")
    done = into_full_disk(steps, "upgrade", "--all-tenants", "--json", stream="stderr")
    assert done.returncode == 1
    assert '"upgraded": 3' in done.stdout, done.stdout
    assert json.loads(done.stdout)["ok"] is True  # the JSON report stays whole: no note after it
    assert {whole(steps, t) for t in TENANTS} == {"r3"}
    run = latest_run()
    assert run["state"] == "finished" and run["counts"] == {"upgraded": 3}

    human = into_full_disk(steps, "downgrade", "r1", "--all-tenants", "--yes", stream="stderr")
    assert human.returncode == 1  # without --json the note that explains it goes to stdout
    assert human.stdout.rstrip().endswith(
        "stderr could not be written (No space left on device): what it printed there is lost"
    ), human.stdout
    assert {whole(steps, t) for t in TENANTS} == {"r1"}


def test_a_failing_command_keeps_its_own_exit_code_when_its_output_is_lost(steps):
    done = into_full_disk(steps, "upgrade", "--tenant", "Bad;Id", stream="stdout")
    assert done.returncode == 2 and "invalid tenant id" in done.stderr, done.stderr
