"""Shared by the training tests: one torch thread, and running a `vivavoce train ...` command until it has
checkpointed, then killing it with SIGKILL (the resume-after-kill tests)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many small ops run several times faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_state(run: Path) -> dict | None:
    """The training loop's state.json of a run directory, or None while it is absent or half-written."""
    try:
        return json.loads((run / "state.json").read_text())
    except (OSError, ValueError):
        return None


def kill_after_step(cmd: list[str], env: dict, run: Path, step: int, timeout: float = 120) -> dict:
    """Start `cmd`, SIGKILL it once its run directory has checkpointed `step`; the state it left."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while (run_state(run) or {}).get("step", -1) < step and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = run_state(run)
    assert killed is not None and killed["step"] >= step, proc.stdout.read()
    return killed
