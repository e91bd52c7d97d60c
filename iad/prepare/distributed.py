"""``python -m iad.prepare`` on many processes and machines: ``torchrun ... -m iad.prepare CONFIG``.

Rank 0 plans the work units (:mod:`iad.prepare.plan`) and hands the ones still to do to every
rank; rank ``r`` of ``W`` takes units ``r, r + W, r + 2W, ...`` of that list. Each rank writes its
own shards, and only rank 0 writes ``dataset.json``, ``plan.json`` and the prompt bank, so no two
processes ever write the same file. No tensor is exchanged: ``torch.distributed`` (gloo) only
carries the plan and the barriers, so the same code runs on CPUs and GPUs.

Every machine must see the output folder (and the input clips) at the path in the config: a
shared filesystem. A rank that does not see rank 0's plan within ``SHARED_FOLDER_TIMEOUT_S``
stops with an error that says so.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from .plan import PLAN_FILE, plan_run_id

log = logging.getLogger("iad.prepare")

# How long a rank waits for rank 0's plan to appear in the output folder (a shared filesystem may
# show a new file late) before it decides the folder is not shared.
SHARED_FOLDER_TIMEOUT_S = 120.0
# Ranks wait at the final barrier for the slowest one: as long as a preparation may take.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_environment(cls) -> "Ranks":
        env = os.environ
        world, rank, local_rank = int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        if not 0 <= rank < world:
            raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}: launch with torchrun, which sets both")
        owns = False
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():   # barriers and the plan only: gloo, whatever the device
                dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
                owns = True
        return cls(rank, world, local_rank, owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        return f"rank {self.rank}/{self.world}"

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any JSON-like object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def gpu_index(self) -> int | None:
        """This rank's GPU (LOCAL_RANK, wrapped around when processes share GPUs), None without CUDA."""
        if not torch.cuda.is_available():
            return None
        return self.local_rank % torch.cuda.device_count()

    def use_device(self) -> int | None:
        """Make this rank's GPU torch's current device, which ComfyUI's loaders then use."""
        index = self.gpu_index()
        if index is not None:
            torch.cuda.set_device(index)
            log.info("%s uses cuda:%d", self.tag, index)
        return index


def new_run_id() -> str:
    return uuid.uuid4().hex


def share_plan(ranks: Ranks, make_plan, output: Path, settings: dict) -> dict:
    """Rank 0 calls ``make_plan()`` (which writes plan.json) and sends its job to every rank; the
    others check that they were started with the same settings and see the same output folder.
    A failure on rank 0 is raised on every rank instead of leaving the others waiting."""
    job = None
    if ranks.main:
        try:
            job = make_plan()
        except Exception as exc:
            ranks.broadcast({"error": f"{type(exc).__name__}: {exc}"})
            raise
    job = ranks.broadcast(job)
    if "error" in job:
        raise RuntimeError(f"{ranks.tag}: rank 0 could not plan the run: {job['error']}")
    if not ranks.main:
        if job["settings"] != settings:
            changed = sorted(k for k in settings if job["settings"].get(k) != settings[k])
            raise ValueError(f"{ranks.tag} was started with other settings than rank 0 ({', '.join(changed)}): give "
                             "every machine the same config and flags")
        wait_for_plan(output, job["run"], ranks)
    return job


def wait_for_plan(output: Path, run_id: str, ranks: Ranks, timeout_s: float | None = None) -> None:
    timeout_s = SHARED_FOLDER_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while plan_run_id(output) != run_id:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{ranks.tag} on {socket.gethostname()} does not see rank 0's {Path(output) / PLAN_FILE} after "
                f"{timeout_s:.0f} s: every machine must see the output folder (and the input clips) at the same path, "
                "on a shared filesystem (NFS, Lustre, ...). Use a shared folder, or run on one machine.")
        time.sleep(0.2)


def wait_for_shards(ranks: Ranks, merge) -> list:
    """Rank 0 after the final barrier: ``merge()`` until no planned shard is missing. Another
    machine's shard may show up late on a network filesystem (cached directory entries), so rank 0
    looks again for up to ``SHARED_FOLDER_TIMEOUT_S`` before it calls it missing."""
    deadline = time.monotonic() + (SHARED_FOLDER_TIMEOUT_S if ranks.world > 1 else 0)
    left = merge()
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = merge()
    return left


def check_clips_visible(ranks: Ranks, paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"{ranks.tag} on {socket.gethostname()} cannot see {len(missing)} planned clips (first: "
                           f"{missing[0]}): every machine must see the input folder at the same path, on a shared "
                           "filesystem.")
