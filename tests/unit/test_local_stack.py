import os
import sys
from pathlib import Path

import pytest

from local_stack import services as local_stack
from local_stack.processes import ManagedProcess, wait_until
from local_stack.services import LocalStack, ServiceUnavailable


def test_missing_gcloud_fails_at_once_saying_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServiceUnavailable, match="gcloud components install pubsub-emulator"):
        local_stack._check_pubsub_emulator_installed()


def test_missing_bigquery_emulator_fails_saying_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("BQEMULATOR_PYTHON", str(tmp_path / "no-python"))
    stack = LocalStack(work_dir=tmp_path / "stack", services=())
    with pytest.raises(ServiceUnavailable, match="make venv"):
        stack.start_bigquery()
    stack.stop()


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, timeout_s=0.2, what="the moon", interval_s=0.05)


def test_stop_kills_the_whole_group_even_a_child_that_ignores_sigterm(tmp_path):
    # A leader that ignores SIGTERM, with a grandchild: both must be gone after stop().
    script = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    script += "subprocess.Popen(['sleep', '300']); print('ready', flush=True); time.sleep(300)"
    process = ManagedProcess("stubborn", [sys.executable, "-c", script], tmp_path / "s.log",
                             dict(os.environ))  # fmt: skip
    wait_until(lambda: "ready" in (tmp_path / "s.log").read_text(), timeout_s=10, what="start")
    assert process._group_alive()
    process.stop(timeout_s=0.5)
    assert not process._group_alive()
    assert process.process.returncode == -9  # it took SIGKILL: SIGTERM was ignored


def test_a_relative_work_dir_is_made_absolute(tmp_path, monkeypatch):
    # The demo passes demo-output/logs; the storage emulator refuses relative data dirs.
    monkeypatch.chdir(tmp_path)
    stack = LocalStack(work_dir=Path("relative/logs"))
    assert stack.work_dir == tmp_path / "relative" / "logs"
    assert stack.work_dir.is_absolute()
