"""The IaD trainer: ``python -m iad.train CONFIG`` or ``iad.train.run(config)`` (docs/training.md).

Trains the decoupler, the resampler and the per-block identity K/V of an IaD adapter on a frozen
Wan T2V base model loaded through ComfyUI, with the base model's own flow-matching loss (adapter
active), the Identity Decoupling and Text Alignment losses, optional prompt-following with the
shipped prompt bank and the PersonalVideo rewards (ICR, SCR). One process, or many under
``torchrun`` with DDP or FSDP. Checkpoints are IaD adapter files the IaD Model Loader reads.

``mode: base`` trains the Wan T2V model itself (its flow-matching loss, no identity) and
``mode: vae`` the Wan VAE (decode/encode reconstruction on stored frames); both save files in
the source file's own layout, which ComfyUI's loaders read like the original.

ComfyUI is imported lazily (when a run starts), never when ``iad.train`` is imported.
"""

from .config import ConfigError, TrainConfig, load_config


def run(config, overrides: dict | None = None):
    """See :func:`iad.train.trainer.run`."""
    from .trainer import run as _run

    return _run(config, overrides)


__all__ = ["run", "load_config", "TrainConfig", "ConfigError"]
