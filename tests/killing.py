"""Kill a real ``metalung`` process with SIGKILL at a chosen moment (resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sigkill_when(args: Sequence[str], ready: Callable[[], bool], timeout: float = 120.0) -> int:
    """Start ``python -m metalung_monai *args``, send SIGKILL as soon as ``ready()`` holds; return its pid.

    Raises ``AssertionError`` when the process ends by itself first (with its stderr) or when
    ``ready`` does not hold within ``timeout`` seconds; the process never outlives the call.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalung_monai", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, (
                f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
            )
            assert time.monotonic() < deadline, f"not ready to be killed after {timeout:.0f} s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid
