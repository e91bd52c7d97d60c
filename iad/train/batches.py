"""What one micro-step trains on (``BatchSource``): the clips of its slice of the global batch
(``data.py``'s builders) and the objective's seeded per-sample draws (``SampleDraws``: sigma, noise,
caption dropout), all made on the CPU before anything goes to the device. Before, the draws were made
inside the forward pass, and caption dropout copied the captions back from the GPU (a sync and two
copies of the batch's text features every step). A micro-step's batch is a pure function of its
index, and this module holds no ComfyUI object (it pickles), so it can also be built ahead of time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig
from .data import PreparedDataset, build_batch, build_caption_batch, build_pixel_batch, global_batch_indices, pad_text, sample_generator

DRAWN = ("sigma", "noise", "model_context")     # what SampleDraws.draw adds to a batch


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """ComfyUI's ``time_snr_shift``: the sigma of flow time ``u`` under ``shift``."""
    return u if shift == 1.0 else shift * u / (1 + (shift - 1) * u)


@dataclass
class SampleDraws:
    """The flow objective's random draws per sample, each from a generator seeded by the sample's
    position in the global batch. ``config`` is read when drawing (a test may change
    ``caption_dropout``); ``null_text``: the prompt bank's empty caption (caption dropout's)."""

    config: TrainConfig
    shift: float
    null_text: torch.Tensor | None = None

    def sigma_noise(self, positions: list[int], shape) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.timesteps
        top = 1.0 - t.start_percent if t.late_steps_only else 1.0
        times, noises = [], []
        for position in positions:
            g = sample_generator(self.config.seed, 0, position, salt=2)
            times.append(torch.rand((), generator=g))
            noises.append(torch.randn(shape, generator=g))
        # elementwise, so the same bits as sample by sample
        return shifted_sigma(torch.stack(times) * top, self.shift).clamp_min(t.min_sigma), torch.stack(noises)

    def drop_captions(self, context: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """Caption dropout: each sample, with probability ``caption_dropout`` (seeded by its position),
        trains with the empty caption (the prompt bank's null text, what ComfyUI's negative "" gives),
        as text-to-video models are trained for classifier-free guidance. Only the identity (if any)
        then conditions the sample. The padded length does not depend on which samples drop."""
        null = self.null_text
        dropped = torch.tensor([float(torch.rand((), generator=sample_generator(self.config.seed, 0, position, salt=5)))
                                < self.config.caption_dropout for position in positions])
        length = max(context.shape[1], null.shape[0])
        out = torch.zeros(len(positions), length, context.shape[-1])
        out[:, : context.shape[1]] = context.float()
        out[dropped] = pad_text([null], length)
        return out.to(context)

    def draw(self, batch: dict) -> dict:
        """The batch with ``sigma``, ``noise`` and ``model_context`` (the captions with the caption
        dropout applied; ``context`` stays the captions, which prompt following reads), on the CPU.
        The latent format's ``process_in`` is elementwise, so the noise has the stored latents' shape."""
        if "noise" in batch:
            return batch
        drawn = dict(batch)
        drawn["sigma"], drawn["noise"] = self.sigma_noise(batch["positions"], batch["latents"].shape[1:])
        drawn["model_context"] = (self.drop_captions(batch["context"], batch["positions"])
                                  if self.config.caption_dropout > 0 else batch["context"])
        return drawn


@dataclass
class BatchSource:
    """Micro-step ``i``'s batch for process ``rank`` of ``world``: its slice of the global batch
    (``global_batch_indices``), built for the mode, with the draws made (modes base and adapter)."""

    dataset: PreparedDataset
    config: TrainConfig
    rank: int = 0
    world: int = 1
    draws: SampleDraws | None = None

    def micro_batch(self, micro_index: int) -> dict:
        c = self.config
        global_micro = c.batch_size * self.world
        indices = global_batch_indices(len(self.dataset), global_micro, micro_index, c.seed)
        mine = slice(self.rank * c.batch_size, (self.rank + 1) * c.batch_size)
        positions = [micro_index * global_micro + p for p in range(global_micro)][mine]
        return self.batch(indices[mine], positions, micro_index)

    def batch(self, indices: list[int], positions: list[int], step: int) -> dict:
        """What the mode's objective reads: captions (base), stored frames (vae), or everything the
        adapter's losses need (adapter)."""
        if self.config.mode == "vae":
            return build_pixel_batch(self.dataset, indices, positions)
        if self.config.mode == "base":
            batch = build_caption_batch(self.dataset, indices, positions)
        else:
            batch = build_batch(self.dataset, indices, positions, step, self.config.seed, self.config.num_references)
        return self.draws.draw(batch)
