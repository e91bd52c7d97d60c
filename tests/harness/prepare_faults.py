"""``python -m iad.prepare`` with faults injected, for the torchrun tests (never installed):

    python -m torch.distributed.run ... tests/harness/prepare_faults.py CONFIG [iad.prepare flags]

Set in the environment:

- ``IAD_TEST_CLIP_LOG=FILE``: every rank appends ``<rank> <clip>`` when it starts a clip, so a test
  can tell which clips a run really prepared.
- ``IAD_TEST_DIE_RANK=r``, ``IAD_TEST_DIE_AFTER=k``: rank ``r`` dies (``os._exit(1)``: no cleanup,
  like a killed process) when it starts its ``k+1``-th clip, after waiting up to 60 s for the
  files in ``IAD_TEST_DIE_WAIT_FOR`` (comma-separated, in the output folder) so that other ranks
  have finished known shards by then.
- ``IAD_TEST_OTHER_OUTPUT_RANK=r``, ``IAD_TEST_OTHER_OUTPUT=DIR``: rank ``r`` is given another output
  folder (a folder that is not shared); ``IAD_TEST_SHARED_WAIT=s`` shortens how long it waits.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository (iad)

from iad.prepare import __main__ as cli  # noqa: E402
from iad.prepare import distributed, pipeline  # noqa: E402


def main() -> int:
    env, rank = os.environ, int(os.environ.get("RANK", "0"))
    argv = sys.argv[1:]
    if env.get("IAD_TEST_OTHER_OUTPUT") and int(env.get("IAD_TEST_OTHER_OUTPUT_RANK", "-1")) == rank:
        argv += ["--output", env["IAD_TEST_OTHER_OUTPUT"]]
    if env.get("IAD_TEST_SHARED_WAIT"):
        distributed.SHARED_FOLDER_TIMEOUT_S = float(env["IAD_TEST_SHARED_WAIT"])
    original = pipeline.Preparer.process
    started = []

    def process(self, clip, key):
        if int(env.get("IAD_TEST_DIE_RANK", "-1")) == rank and len(started) == int(env.get("IAD_TEST_DIE_AFTER", "0")):
            deadline = time.monotonic() + 60
            waits = [self.out / name for name in env.get("IAD_TEST_DIE_WAIT_FOR", "").split(",") if name]
            while not all(p.exists() for p in waits) and time.monotonic() < deadline:
                time.sleep(0.1)
            os._exit(1)
        started.append(clip.key)
        if env.get("IAD_TEST_CLIP_LOG"):
            with open(env["IAD_TEST_CLIP_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{rank} {clip.key}\n")
        return original(self, clip, key)

    pipeline.Preparer.process = process   # this test process only
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
