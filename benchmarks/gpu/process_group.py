"""Ending a child that runs in a process session of its own (``start_new_session=True``): its whole
group goes, so grandchildren (bench_train.py's runs, torchrun's workers, gpu-world's build) do not
keep the GPU after the deadline."""

from __future__ import annotations

import os
import signal
import subprocess


def end_group(process: subprocess.Popen, grace_s: float = 0.0) -> None:
    """SIGTERM and ``grace_s`` seconds to unwind first (where ``grace_s`` > 0), then SIGKILL; returns
    once the child is reaped."""
    steps = ([(signal.SIGTERM, grace_s)] if grace_s > 0 else []) + [(signal.SIGKILL, 10.0)]
    for sig, wait in steps:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            process.wait()
            return
        except subprocess.TimeoutExpired:
            continue
