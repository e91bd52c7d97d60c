"""A tiny text encoder for the synthetic world's vocabulary, producing Wan-shaped conditioning.

Wan's real text encoder (umt5-xxl, 5.7 B parameters) cannot exist here; the world's captions use a
closed vocabulary (``synthworld.world``), so a phrase-level encoder is enough: the caption is split
into known phrases (longest match), each phrase becomes a fixed seeded 4096-d vector plus a
position vector (Wan's cross-attention has no positions of its own), padded with zeros to ``MAX_TOKENS`` like Wan pads umt5
output. There is nothing to train: the tables are a pure function of ``SEED``, so the conditioning
is bit-for-bit reproducible and the diffusion model's ``text_embedding`` learns to read it.
"""

from __future__ import annotations

import torch

from . import world

TEXT_DIM = 4096
MAX_TOKENS = 8
SEED = 1234
VOCABULARY = ("<unk>", "a person", ",", "then", *world.ACTION_PHRASES.values(), *world.SCENE_PHRASES.values(),
              *world.APPEARANCE_PHRASES)
_TABLES: dict[str, torch.Tensor] = {}


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    if not _TABLES:
        g = torch.Generator().manual_seed(SEED)
        _TABLES["words"] = torch.randn(len(VOCABULARY), TEXT_DIM, generator=g) * 0.5
        _TABLES["positions"] = torch.randn(MAX_TOKENS, TEXT_DIM, generator=g) * 0.25
    return _TABLES["words"], _TABLES["positions"]


def tokenize(text: str) -> list[int]:
    """Phrase ids of ``text`` (longest known phrase first; unknown words become ``<unk>``)."""
    words = text.lower().replace(",", " , ").split()
    phrases = sorted(((p.split(), i) for i, p in enumerate(VOCABULARY) if i), key=lambda t: -len(t[0]))
    ids, k = [], 0
    while k < len(words):
        for parts, i in phrases:
            if words[k:k + len(parts)] == parts:
                ids.append(i)
                k += len(parts)
                break
        else:
            ids.append(0)
            k += 1
    return ids


def unknown_words(text: str) -> list[str]:
    """Words of ``text`` outside the world's vocabulary (for a helpful warning)."""
    known = {w for p in VOCABULARY[1:] for w in p.split()}
    return [w for w in text.lower().replace(",", " ").split() if w not in known]


def encode(texts: list[str] | str) -> torch.Tensor:
    """``[B, MAX_TOKENS, 4096]`` float32 conditioning; the empty caption is all zeros (Wan's
    unconditional branch sees zero padding too)."""
    if isinstance(texts, str):
        texts = [texts]
    words, positions = _tables()
    out = torch.zeros(len(texts), MAX_TOKENS, TEXT_DIM)
    for b, text in enumerate(texts):
        ids = tokenize(text)[:MAX_TOKENS]
        for p, i in enumerate(ids):
            out[b, p] = words[i] + positions[p]
    return out
