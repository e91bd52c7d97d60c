"""Data preparation for IaD training: ``python -m iad.prepare`` (docs/training.md).

Input: a folder of clips (video files or folders of frames) with captions: a sidecar
``<clip>.txt`` (the caption) or ``<clip>.json`` (``{"caption": ..., "action": ..., "person": ...}``),
or one ``captions.json`` / ``captions.jsonl`` mapping clip names to the same fields. ``action``
(optional) is the clip's action phrase ("laughing, head turned left") for the Text Alignment
Loss; ``person`` (optional) names who is in it, so references may come from another clip of them.

Output: shards (see :mod:`iad.prepare.shards`) with the primary face track, per-frame face
embeddings and landmarks, VAE latents and text embeddings precomputed through ComfyUI's own
loaders, and references drawn from a different moment than the target window.

Resumable: finished shards are recorded in ``dataset.json`` and their clips are not redone;
corrupt or unusable clips are skipped and listed with the reason (``skipped`` in dataset.json).
Under ``torchrun`` the planned shards are split over the processes (``distributed.py``,
``plan.py``); the result is the same files, byte for byte, as one process makes.

The pipeline lives in ``pipeline.py``; its names load on first use (PEP 562), so that
``python -m iad.prepare --help`` answers before torch is imported.
"""

from ..lazy_exports import lazy_getattr

_PIPELINE_NAMES = ("PrepareConfig", "ClipSource", "ClipSkipped", "discover_clips", "load_prompt_bank", "choose_window",
                   "Preparer", "run", "PROMPT_BANK_PATH")
__all__ = list(_PIPELINE_NAMES)
__getattr__ = lazy_getattr(__name__, globals(), dict.fromkeys(_PIPELINE_NAMES, "pipeline"))
