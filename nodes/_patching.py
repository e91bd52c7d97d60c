"""Patching a native ComfyUI ``MODEL`` (a ModelPatcher) with an IaD identity adapter.

Only clones are patched, never the shared model, and never by global monkeypatching:
- Wan / LTX-Video: an object patch on the ``forward`` of each listed block's text
  cross-attention (``blocks.{i}.cross_attn`` / ``transformer_blocks.{i}.attn2``). Patching the
  ``forward`` attribute (not the module) keeps the module tree unchanged, so LoRA keys, lowvram
  casting and weight offloading see the same modules as in the unpatched model.
- HunyuanVideo (no text cross-attention): ``patches_replace["dit"]`` double/single block
  replacements that add a residual identity attention after the original block.

The adapter's ModelPatcher (the one IaD Model Loader made) is owned the way core's model patches
own theirs (``comfy_extras/nodes_model_patch.py``): an ``AdapterOwner`` entry in the clone's
``transformer_options["patches"]`` whose ``models()`` returns that patcher, so model management
loads and offloads it together with the base model, always that one patcher (``set_additional_models``
would hand model management a new copy with every clone of the MODEL). Each identity entry holds
that patcher too: while a patched model stays loaded, its object patches (and so the entries and the
adapter module) sit on the shared diffusion model, and the patcher must not die before the module
(ComfyUI 0.3.75 reports that as "memory leak with model IdentityAdapter" and runs a full garbage
collection). Identity K/V are computed from the identity tokens once per (block, device, dtype) and
cached: per step only ``attention(q, K_id, V_id)`` is added.

The unconditional (negative) rows of a CFG batch get, depending on ``uncond_identity``: nothing
("none"), the same identity ("same as cond"), or the adapter's null tokens, i.e. its resampler
applied to an all-zero face embedding ("null identity (Lynx)", what Lynx feeds its negative pass).

The step range is resolved when sampling starts (``StepRangeResolver``, an OUTER_SAMPLE wrapper),
against the model_sampling of the model being sampled, so node order never changes it.

Patch objects are immutable after construction: ``__deepcopy__`` (ModelPatcher.clone deep-copies
``model_options``) returns them as they are instead of copying adapter weights and tokens.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ..iad.patching import (StepGate, add_identity_attention, detect_architecture, residual_identity_attention, rows_for,
                            single_block_image_tokens, uncond_rows)
from ..iad.patching.arch import ArchInfo, check_adapter_fits

ADAPTER_PATCH_KEY = "iad_adapters"   # transformer_options["patches"] list that owns the adapters
_uids = itertools.count(1)

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


def _attention(q, k, v, heads):
    return comfy_attention.optimized_attention(q, k, v, heads=heads)


# -- the IAD_MODEL socket -------------------------------------------------------------------------
@dataclass(eq=False)
class IaDModel:
    """What ``IAD_MODEL`` carries: the adapter (``iad.adapter.IdentityAdapter``) inside a
    ModelPatcher so ComfyUI's model management moves it with the base model."""

    patcher: comfy.model_patcher.ModelPatcher
    name: str = ""

    @classmethod
    def wrap(cls, adapter: torch.nn.Module, name: str = "") -> "IaDModel":
        patcher = comfy.model_patcher.ModelPatcher(
            adapter, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        return cls(patcher, name or getattr(adapter.config, "name", "") or "IaD adapter")

    @property
    def adapter(self):
        return self.patcher.model

    @property
    def config(self):
        return self.adapter.config


# -- the IAD_IDENTITY socket ----------------------------------------------------------------------
@dataclass(eq=False)
class IaDIdentity:
    """Identity tokens computed once per run by IaD Identity, ``[1, num_tokens, token_dim]`` on the CPU."""

    tokens: torch.Tensor
    adapter_id: int              # id() of the adapter module that made the tokens
    adapter_name: str
    decoupling: str              # human-readable: which decoupler, strength
    num_references: int
    notes: list[str] = field(default_factory=list)


# -- one identity applied to a model ----------------------------------------------------------------
def null_tokens(adapter) -> torch.Tensor:
    """The adapter's tokens for an all-zero face embedding (Lynx's unconditional input), on the CPU
    like IAD_IDENTITY's tokens."""
    with torch.no_grad():
        return adapter.null_tokens().float().cpu()


STEP_GATES_KEY = "iad_step_gates"   # transformer_options: {entry uid: StepGate} of the running sampler


class IdentityEntry:
    """One IaD Apply: adapter + tokens + weight + step range + what the uncond rows get.
    Caches per-block K/V (identity tokens, and the null tokens when they are used).

    The step range stays in percent until sampling starts: ``StepRangeResolver`` turns it into
    sigmas with the model_sampling of the model that is actually sampled (after every shift node,
    whatever their order). ``fallback_gate`` (resolved when IaD Apply ran) is only for a model
    called outside ComfyUI's samplers."""

    def __init__(self, patcher, tokens: torch.Tensor, weight: float, start_percent: float, end_percent: float,
                 fallback_gate: StepGate, uncond: str = UNCOND_NONE):
        self.uid = next(_uids)
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
        model call (cached in that call's transformer_options)."""
        sigmas = transformer_options.get("sigmas")
        cache = transformer_options.get("iad_gates")
        if cache is None or cache[0] is not sigmas:  # a new model call (or a reused options dict)
            cache = (sigmas, {})
            transformer_options["iad_gates"] = cache
        active = cache[1].get(self.uid)
        if active is None:
            gate = transformer_options.get(STEP_GATES_KEY, {}).get(self.uid, self.fallback_gate)
            active = True if sigmas is None else gate.active(float(sigmas.max()))
            cache[1][self.uid] = active
        if not active:
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
            param = self.adapter.blocks[str(block_index)].to_k_ip.weight
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


def _active(entries, transformer_options: dict, batch: int):
    """``[(entry, tokens, rows), ...]`` for the entries active in this model call."""
    out = []
    for entry in entries:
        passes = entry.passes(transformer_options, batch)
        if passes is not False:
            out.extend((entry, tokens, rows) for tokens, rows in passes)
    return out


class AdapterOwner:
    """Owns an adapter's ModelPatcher for model management, as core's model patches do: listed in
    ``transformer_options["patches"][ADAPTER_PATCH_KEY]`` (no model calls that list), its ``models()``
    is what ``load_models_gpu`` loads with the MODEL."""

    def __init__(self, patcher):
        self.patcher = patcher

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        return self   # the patcher is moved by model management itself

    def models(self):
        return [self.patcher]


class _PatchBase:
    """Shared by the patch objects: immutable, cheap to deep-copy, weights owned by AdapterOwner."""

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        # K/V are cached per device/dtype on first use; the adapter itself is moved by model
        # management (AdapterOwner), so there is nothing to move here.
        return self

    def models(self):
        # AdapterOwner lists the adapter's patcher once per IaD Apply; the block patches do not.
        return []

    def _add_identity(self, out, q, active, block_index, heads, transformer_options, norm_k=None):
        for entry, tokens, rows in active:
            k_id, v_id = entry.kv(block_index, q.device, q.dtype, tokens)
            if entry.key_norm and norm_k is not None:
                k_id = norm_k(k_id)
            add_identity_attention(out, q, k_id, v_id, heads, entry.weight, rows, _attention)
            if IDENTITY_CALL_OBSERVERS:
                entry.notify(block_index, transformer_options, rows, tokens)
        return out


class WanCrossAttentionIdentity(_PatchBase):
    """Replaces ``blocks.{i}.cross_attn.forward``: the block's own text (and I2V image)
    cross-attention plus ``weight * attention(q, K_id, V_id)``, before the output projection."""

    def __init__(self, module, inner, block_index: int, entries: tuple):
        self.module, self.inner, self.block_index, self.entries = module, inner, block_index, tuple(entries)

    def __call__(self, x, context, *args, transformer_options={}, **kwargs):
        active = _active(self.entries, transformer_options, x.shape[0])
        if not active:
            return self.inner(x, context, *args, transformer_options=transformer_options, **kwargs)
        m = self.module
        heads = m.num_heads
        q = m.norm_q(m.q(x))
        img_out = None
        if hasattr(m, "k_img"):  # WanI2VCrossAttention: CLIP-vision tokens come first in context
            context_img_len = kwargs.get("context_img_len", args[0] if args else None)
            context_img = context[:, :context_img_len]
            context = context[:, context_img_len:]
            k_img = m.norm_k_img(m.k_img(context_img))
            img_out = comfy_attention.optimized_attention(q, k_img, m.v_img(context_img), heads=heads,
                                                          transformer_options=transformer_options)
        k = m.norm_k(m.k(context))
        out = comfy_attention.optimized_attention(q, k, m.v(context), heads=heads, transformer_options=transformer_options)
        if img_out is not None:
            out = out + img_out
        self._add_identity(out, q, active, self.block_index, heads, transformer_options, m.norm_k)
        return m.o(out)


class LTXVCrossAttentionIdentity(_PatchBase):
    """Replaces ``transformer_blocks.{i}.attn2.forward`` (LTX-Video text cross-attention)."""

    def __init__(self, module, inner, block_index: int, entries: tuple):
        self.module, self.inner, self.block_index, self.entries = module, inner, block_index, tuple(entries)

    def __call__(self, x, context=None, mask=None, pe=None, transformer_options={}):
        active = _active(self.entries, transformer_options, x.shape[0])
        if not active or pe is not None:  # attn2 never gets rotary embeddings; anything else is not ours
            return self.inner(x, context=context, mask=mask, pe=pe, transformer_options=transformer_options)
        m = self.module
        context = x if context is None else context
        q = m.q_norm(m.to_q(x))
        k = m.k_norm(m.to_k(context))
        v = m.to_v(context)
        if mask is None:
            out = comfy_attention.optimized_attention(q, k, v, m.heads, attn_precision=m.attn_precision,
                                                      transformer_options=transformer_options)
        else:
            out = comfy_attention.optimized_attention_masked(q, k, v, m.heads, mask, attn_precision=m.attn_precision,
                                                             transformer_options=transformer_options)
        self._add_identity(out, q, active, self.block_index, m.heads, transformer_options, m.k_norm)
        return m.to_out(out)


class HunyuanBlockIdentity(_PatchBase):
    """A ``patches_replace["dit"]`` entry for a HunyuanVideo double or single block: the original
    block, then ``img + weight * attention(rms(img), K_id, V_id)`` on the video tokens."""

    def __init__(self, kind: str, block_index: int, heads: int, entries: tuple, inner=None):
        self.kind, self.block_index, self.heads, self.entries, self.inner = kind, block_index, heads, tuple(entries), inner

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        transformer_options = args["transformer_options"]
        if self.kind == "double":
            # Single blocks see video+text as one sequence; on ComfyUI without img_slice (0.3.75) the
            # text length recorded here says where the video tokens end.
            transformer_options["iad_txt_len"] = int(out["txt"].shape[1])
        img = out["img"]
        active = _active(self.entries, transformer_options, img.shape[0])
        if not active:
            return out
        token_slice = single_block_image_tokens(transformer_options, img.shape[1]) if self.kind == "single" else None
        for entry, tokens, rows in active:
            k_id, v_id = entry.kv(self.block_index, img.device, img.dtype, tokens)
            img = residual_identity_attention(img, k_id, v_id, self.heads, entry.weight, rows, token_slice, _attention)
            if IDENTITY_CALL_OBSERVERS:
                entry.notify(self.block_index, transformer_options, rows, tokens)
        out = dict(out)
        out["img"] = img
        return out


# -- applying -------------------------------------------------------------------------------------
def architecture_of(model) -> ArchInfo:
    base = model.model
    return detect_architecture(base.diffusion_model, type(getattr(base, "model_config", None)).__name__
                               if getattr(base, "model_config", None) is not None else None)


def step_gate(model, start_percent: float, end_percent: float) -> StepGate:
    return gate_for(model.get_model_object("model_sampling"), start_percent, end_percent)


def gate_for(sampling, start_percent: float, end_percent: float) -> StepGate:
    return StepGate(float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))


class StepRangeResolver:
    """An OUTER_SAMPLE wrapper (it rides along on every later clone of the patched model): when a
    sampler starts, it resolves its entry's percent range against that model's model_sampling,
    as core does for a conditioning's start/end percent, and hands the sigmas to the patches in
    the sampler's own transformer_options. So IaD Apply before or after ModelSamplingSD3 (or any
    other shift or LoRA node) gives the same steps."""

    def __init__(self, entry: IdentityEntry):
        self.entry = entry

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        guider = executor.class_obj
        sampling = guider.model_patcher.get_model_object("model_sampling")
        options = guider.model_options.setdefault("transformer_options", {})   # this sampling run's copy
        gates = dict(options.get(STEP_GATES_KEY, {}))
        gates[self.entry.uid] = gate_for(sampling, self.entry.start_percent, self.entry.end_percent)
        options[STEP_GATES_KEY] = gates
        return executor(*args, **kwargs)


def apply_identity(model, iad_model: IaDModel, identity: IaDIdentity, weight: float, start_percent: float,
                   end_percent: float, uncond_identity: str | bool = UNCOND_NONE):
    """A patched clone of ``model`` (or ``model`` itself when the identity could never act).
    ``uncond_identity``: one of UNCOND_CHOICES (a bool is the former ``apply_to_uncond``)."""
    uncond = uncond_mode(uncond_identity)
    arch = architecture_of(model)
    check_adapter_fits(arch, iad_model.config, f"IaD adapter '{iad_model.name}'")
    if identity.adapter_id != id(iad_model.adapter):
        raise ValueError(
            f"The IAD_IDENTITY input was computed with adapter '{identity.adapter_name}', but IaD Apply got adapter "
            f"'{iad_model.name}'. Connect the same IaD Model Loader output to IaD Identity and IaD Apply."
        )
    if weight == 0.0 or start_percent > end_percent:
        return model  # bit-identical and free: nothing is patched (validation refuses start > end anyway)
    entry = IdentityEntry(iad_model.patcher, identity.tokens, weight, start_percent, end_percent,
                          step_gate(model, start_percent, end_percent), uncond)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"iad_step_range_{entry.uid}",
                                 StepRangeResolver(entry))
    diffusion_model = patched.model.diffusion_model
    if arch.family in ("wan", "ltxv"):
        patch_cls = WanCrossAttentionIdentity if arch.family == "wan" else LTXVCrossAttentionIdentity
        for block in iad_model.config.blocks:
            key = f"diffusion_model.{arch.site(block)}.forward"
            current = patched.get_model_object(key)
            if isinstance(current, patch_cls):  # an earlier IaD Apply in the chain: compose
                patch = patch_cls(current.module, current.inner, block, current.entries + (entry,))
            else:
                module = _get(diffusion_model, arch.site(block))
                patch = patch_cls(module, current, block, (entry,))
            patched.add_object_patch(key, patch)
    else:
        blocks = set(iad_model.config.blocks)
        if any(b >= arch.double_blocks for b in blocks):
            blocks.add(arch.double_blocks - 1)  # records where the text starts for the single blocks
        dit = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
        for block in sorted(blocks):
            kind, index = ("double", block) if block < arch.double_blocks else ("single", block - arch.double_blocks)
            name = f"{kind}_block"
            current = dit.get((name, index))
            entries = (entry,) if block in iad_model.config.blocks else ()
            if isinstance(current, HunyuanBlockIdentity):
                patch = HunyuanBlockIdentity(kind, block, arch.num_heads, current.entries + entries, current.inner)
            else:
                patch = HunyuanBlockIdentity(kind, block, arch.num_heads, entries, current)
            patched.set_model_patch_replace(patch, "dit", name, index)
    patched.set_model_patch(AdapterOwner(iad_model.patcher), ADAPTER_PATCH_KEY)
    return patched


def _get(root, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
