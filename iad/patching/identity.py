"""One identity applied to a model: what the ``IAD_IDENTITY`` socket carries, and the
``IdentityEntry`` that every block patch of one IaD Apply shares.

An entry holds the adapter's ModelPatcher, the identity tokens, the weight, the step range and what
the unconditional rows get. It decides, once per model call, whether it is active and for which
batch rows, and caches each block's identity K/V per (device, dtype), so that a step only adds
``attention(q, K_id, V_id)``.

The unconditional (negative) rows of a CFG batch get, depending on ``uncond_identity``: nothing
("none"), the same identity ("same as cond"), or the adapter's null tokens, i.e. its resampler
applied to an all-zero face embedding ("null identity (Lynx)", what Lynx feeds its negative pass).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from .adapter_model import ADAPTER_PATCH_KEY
from .attention import rows_for, uncond_rows
from .step_range import STEP_GATES_KEY, StepGate

_uids = itertools.count(1)

# transformer_options key set only during Lynx's one-time reference pass (``wan_ref.py``).
REF_CAPTURE_KEY = "iad_ref_capture"


def next_uid() -> int:
    """A process-wide id for one applied entry (identity or reference): keys its step gate."""
    return next(_uids)

# Diagnostics: callables ``observer(event: dict)`` told about every identity attention that runs
# (block, sigma, rows). Empty in normal use (one truthiness check per active call); tests and
# benchmarks use it to see which steps the identity really ran in.
IDENTITY_CALL_OBSERVERS: list = []

# What the unconditional (negative) rows of a CFG batch get.
UNCOND_NONE = "none"                       # no identity: CFG also pushes towards the identity
UNCOND_SAME = "same as cond"               # the real identity: milder likeness
UNCOND_NULL = "null identity (Lynx)"       # the null tokens' attention, as Lynx's negative pass
UNCOND_CHOICES = [UNCOND_NONE, UNCOND_SAME, UNCOND_NULL]


def uncond_mode(value) -> str:
    """The ``uncond_identity`` choice; booleans are the former ``apply_to_uncond`` toggle."""
    if isinstance(value, bool):
        return UNCOND_SAME if value else UNCOND_NONE
    if value not in UNCOND_CHOICES:
        raise ValueError(f"IaD Apply: uncond_identity must be one of {UNCOND_CHOICES}, got {value!r}.")
    return value


@dataclass(eq=False)
class IaDIdentity:
    """Identity tokens computed once per run by IaD Identity, ``[1, num_tokens, token_dim]`` on the CPU."""

    tokens: torch.Tensor
    adapter_id: int              # id() of the adapter module that made the tokens
    adapter_name: str
    decoupling: str              # human-readable: which decoupler, strength
    num_references: int
    notes: list[str] = field(default_factory=list)


def null_tokens(adapter) -> torch.Tensor:
    """The adapter's tokens for an all-zero face embedding (Lynx's unconditional input), on the CPU
    like IAD_IDENTITY's tokens."""
    with torch.no_grad():
        return adapter.null_tokens().float().cpu()


class IdentityEntry:
    """One IaD Apply: adapter + tokens + weight + step range + what the uncond rows get.
    Caches per-block K/V (identity tokens, and the null tokens when they are used).

    The step range stays in percent until sampling starts: ``StepRangeResolver`` turns it into
    sigmas with the model_sampling of the model that is actually sampled (after every shift node,
    whatever their order). ``fallback_gate`` (resolved when IaD Apply ran) is only for a model
    called outside ComfyUI's samplers."""

    def __init__(self, patcher, tokens: torch.Tensor, weight: float, start_percent: float, end_percent: float,
                 fallback_gate: StepGate, uncond: str = UNCOND_NONE):
        self.uid = next_uid()
        # The adapter's ModelPatcher, not only its module: while the model is loaded its object patches
        # sit on the shared diffusion model (until unpatched), and with them this entry. Model
        # management must never see the adapter module alive after its patcher died (0.3.75 logs that
        # as a memory leak), so the patcher lives exactly as long as the module is referenced here.
        self.patcher = patcher
        adapter = self.adapter = patcher.model
        self.tokens = tokens
        self.weight = float(weight)
        self.start_percent, self.end_percent = float(start_percent), float(end_percent)
        self.fallback_gate = fallback_gate
        self.uncond = uncond_mode(uncond)
        self.key_norm = bool(adapter.config.identity_key_norm)
        # Computed here, where the adapter sits as it did for IaD Identity, never during sampling.
        self.null_tokens = null_tokens(adapter) if self.uncond == UNCOND_NULL else None
        self._kv: dict = {}

    def passes(self, transformer_options: dict, batch: int):
        """``False`` when inactive at this step, else ``[(tokens, rows), ...]``: which tokens
        ("identity" or "null") go to which batch rows (None = all). The sigma test runs once per
        model call (cached in that call's transformer_options).

        Only a model that owns this entry's adapter (its ``AdapterOwner`` in the call's patches) gets the
        identity: a loader that re-applies object patches without first restoring the model (DisTorch's
        ``partially_load``) can leave an IaD patch on a model sampled afterwards without IaD, and that
        model must then give exactly its own output."""
        owners = transformer_options.get("patches", {}).get(ADAPTER_PATCH_KEY, ())
        if not any(owner.patcher is self.patcher for owner in owners):
            return False
        if not gate_active(self.uid, self.fallback_gate, transformer_options):
            return False
        cond_or_uncond = transformer_options.get("cond_or_uncond")
        rows = rows_for(batch, cond_or_uncond, self.uncond == UNCOND_SAME)
        out = [] if rows == [] else [("identity", rows)]
        if self.uncond == UNCOND_NULL:
            null_rows = uncond_rows(batch, cond_or_uncond)
            if null_rows:
                out.append(("null", null_rows))
        return out or False

    def kv(self, block_index: int, device, dtype, tokens: str = "identity") -> tuple[torch.Tensor, torch.Tensor]:
        key = (tokens, block_index, device, dtype)
        cached = self._kv.get(key)
        if cached is None:
            source = self.tokens if tokens == "identity" else self.null_tokens
            # The block's own projection decides where K/V are computed: under partial loading
            # parts of the adapter may sit on different devices.
            param = self.adapter.blocks[str(block_index)].weight_param
            with torch.no_grad():
                k, v = self.adapter.block_kv(block_index, source.to(param.device, param.dtype))
            cached = (k.to(device, dtype), v.to(device, dtype))
            self._kv[key] = cached
        return cached

    def notify(self, block_index: int, transformer_options: dict, rows, tokens: str = "identity") -> None:
        sigmas = transformer_options.get("sigmas")
        event = {"entry": self.uid, "block": block_index, "rows": rows, "tokens": tokens,
                 "sigma": None if sigmas is None else float(sigmas.max())}
        for observer in IDENTITY_CALL_OBSERVERS:
            observer(event)


def gate_active(uid: int, fallback_gate: StepGate, transformer_options: dict) -> bool:
    """Whether the entry ``uid`` acts at this model call's sigma: the gate its sampler resolved
    (``STEP_GATES_KEY``), else ``fallback_gate``; always outside a sampler (no sigmas). Tested once
    per model call and cached in that call's transformer_options."""
    sigmas = transformer_options.get("sigmas")
    cache = transformer_options.get("iad_gates")
    if cache is None or cache[0] is not sigmas:  # a new model call (or a reused options dict)
        cache = (sigmas, {})
        transformer_options["iad_gates"] = cache
    active = cache[1].get(uid)
    if active is None:
        gate = transformer_options.get(STEP_GATES_KEY, {}).get(uid, fallback_gate)
        active = True if sigmas is None else gate.active(float(sigmas.max()))
        cache[1][uid] = active
    return active


def active_passes(entries, transformer_options: dict, batch: int):
    """``[(entry, tokens, rows), ...]`` for the entries active in this model call. None inside Lynx's
    reference pass (``wan_ref.py``), which runs the model without identity, as Lynx does."""
    if transformer_options.get(REF_CAPTURE_KEY) is not None:
        return []
    out = []
    for entry in entries:
        passes = entry.passes(transformer_options, batch)
        if passes is not False:
            out.extend((entry, tokens, rows) for tokens, rows in passes)
    return out
