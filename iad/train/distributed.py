"""PyTorch's own distributed stack: ``torchrun`` environment, DDP, FSDP (``fully_shard``).

Launch: ``torchrun --nproc_per_node N -m iad.train CONFIG``. Without torchrun the same config
runs in one process. Batches are split by global sample number (``iad.train.data``), so N
processes with ``batch_size`` b reproduce one process with ``batch_size`` N*b.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistState:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "none"     # none | ddp | fsdp
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1 or dist.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0


def device_name(device: str, local_rank: int, cuda_available: bool) -> str:
    """The configured device with an index: a bare "cuda" is this process's GPU (``LOCAL_RANK``, 0
    in one process); ``torch.cuda.set_device`` refuses a CUDA device without one."""
    if device == "auto":
        return f"cuda:{local_rank}" if cuda_available else "cpu"
    if device == "cuda":
        return f"cuda:{local_rank}"
    return device


def require_fsdp2() -> None:
    """FSDP here is FSDP2's ``fully_shard``: a torch below its tested floor is refused by name before any
    process group starts (DDP works there). ``IAD_FSDP_BELOW_FLOOR=1`` lets it run anyway, for
    scripts/torch_floor.py's probes that measure where the floor is."""
    from ..torch_support import fsdp_refusal

    refusal = fsdp_refusal(torch.__version__)
    if refusal and os.environ.get("IAD_FSDP_BELOW_FLOOR") != "1":
        raise ValueError(refusal)


def setup(strategy: str, backend: str, device: str) -> DistState:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device_name(device, local_rank, torch.cuda.is_available()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "none"
    if strategy == "fsdp":
        require_fsdp2()
    if strategy in ("ddp", "fsdp") and "RANK" not in os.environ:
        if strategy == "ddp":
            strategy = "none"     # one process: DDP would only add overhead
        else:   # FSDP in one process: a single-rank group keeps the same code path
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
    if world > 1 and strategy == "none":
        raise ValueError("launched with several processes but distributed.strategy is 'none'; use 'ddp' or 'fsdp'")
    if strategy in ("ddp", "fsdp") and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    return DistState(rank=rank, world=world, local_rank=local_rank, strategy=strategy, device=dev)


def wrap(module: nn.Module, state: DistState, find_unused: bool, shard_base: nn.Module | None = None) -> nn.Module:
    if state.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[state.device.index] if state.device.type == "cuda" else None,
                                       find_unused_parameters=find_unused)
    if state.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        if getattr(module, "vae", None) is not None:    # mode 'vae': one unit (no repeated blocks to shard by)
            fully_shard(module)
            return module
        trained_base = getattr(module, "diffusion_model", None)    # mode 'base': the model itself trains
        if trained_base is not None:
            for block in trained_base.blocks:    # gathered per block for forward/backward
                fully_shard(block)
            fully_shard(module)
            return module
        if shard_base is not None:   # frozen base blocks: gathered per block for forward/backward
            for block in shard_base.blocks:
                fully_shard(block)
        # Only modules whose forward runs get FSDP's unshard hooks: the resampler is called as a
        # module; the per-block K/V, registers and decoupler are read by methods, so they belong to
        # the root group, which is gathered when the root forward starts.
        fully_shard(module.adapter.resampler)
        fully_shard(module)
        return module
    return module


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and keeps this rank's slice
    (all_reduce based, so it works on gloo, which has no reduce_scatter)."""

    @staticmethod
    def forward(ctx, tensor):
        world = dist.get_world_size()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank tensor over ranks (with gradients for float tensors).

    Batch-level losses (InfoNCE, text alignment) then see the global batch on every rank. Every
    rank computes the same loss L; backward gives rank r ``W * dL/dx_r``; DDP's gradient mean
    (1/W) turns that into exactly ``dL/dx`` of the single-process run."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    if tensor.is_floating_point() and tensor.requires_grad:
        return _GatherWithGrad.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def mean_over_ranks(values: dict[str, float], device) -> dict[str, float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
