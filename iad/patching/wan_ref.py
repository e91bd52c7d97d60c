"""Lynx full's reference adapter on a native Wan ``MODEL``: features of the reference face in every
block's self-attention (docs/lynx.md, "Ref-adapter").

Three ComfyUI mechanisms on a ModelPatcher clone, nothing else:

- an OUTER_SAMPLE wrapper (``ReferenceRun``) gives each sampling run an empty feature store and
  resolves the step range against the model that is really sampled;
- a DIFFUSION_MODEL wrapper (``ReferencePass``) runs Lynx's one-time reference pass on the first
  model call of a run that needs it: the same diffusion model, at timestep 0, on the VAE latent
  of the face crop (cond rows) or of the mid-grey zero image (uncond rows), with the text
  "image of a face". The self-attention patches record each block's input there (the modulated
  ``norm1(x) * (1 + scale) + shift``) and keep only its reference K/V
  ``(norm_k(to_k_ref(f)), to_v_ref(f))``. Identity adapters do not act in that pass (Lynx runs it
  without them). Per run, because later clones of the MODEL (a LoRA after this node) change the
  weights the features come from; it costs one single-frame pass per reference kind.
- object patches on ``blocks.{i}.self_attn.forward`` (``WanSelfAttentionReference``) add
  ``ref_scale * attention(norm_q(q(x)), K_ref, V_ref)`` (no RoPE on this term, as in Lynx) to the
  self-attention's output *before* its output projection: through ComfyUI's own
  ``optimized_attention_override``, set for that one call, which adds the term to the attention
  result that ComfyUI's ``WanSelfAttention`` then projects with its own ``o`` (any weight format:
  fp8, GGUF, offloaded). The reference attention itself runs through ``optimized_attention`` with the
  call's transformer_options, so an installed attention override applies to it too.

Rows: ComfyUI's cond chunks (index 0 of ``cond_or_uncond``) get the face's features, uncond chunks
the zero image's, exactly Lynx's ``ref_buffer`` / ``ref_buffer_uncond``; with IaD Lynx Guider the
identity-negative pass is a cond chunk, as in Lynx. Every video token of the self-attention gets the
term, as in Lynx, where the sequence is the video's tokens only; tokens a Wan variant puts next to
the video (Phantom's subject images) are left as they are, as IaD Apply leaves them
(``call_context.py`` says per call which rows are the video).
"""

from __future__ import annotations

import torch

from . import call_context
from .adapter_model import ADAPTER_PATCH_KEY, AdapterOwner
from .attention import rows_for, uncond_rows
from .block_patch import SitePatch, patch_sites
from .identity import REF_CAPTURE_KEY, gate_active, next_uid
from .step_range import StepGate, StepRangeResolver
from .wan import video_row_range

IMAGE, ZERO = "image", "zero"   # the reference kinds: the face crop (cond rows), the zero image (uncond rows)


def store_key(uid: int) -> str:
    return f"iad_ref_features_{uid}"


class ReferenceFeatures:
    """One run's reference K/V of one entry: ``kv[kind][block] = (K, V)`` with batch 1. A plain object
    (not a dict), so ComfyUI's per-call merge of transformer_options shares it instead of copying it."""

    def __init__(self):
        self.kv: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}


class ReferenceCapture:
    """Set in transformer_options during a reference pass: which entry records, and where."""

    def __init__(self, uid: int):
        self.uid = uid
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


class ReferenceEntry:
    """One IaD Lynx Ref Adapter: the ref layers' patcher, the reference latents (processed, on the
    CPU), the reference text, ``ref_scale`` and the step range."""

    def __init__(self, patcher, latents: dict[str, torch.Tensor], context: torch.Tensor, ref_scale: float,
                 start_percent: float, end_percent: float, fallback_gate: StepGate):
        self.uid = next_uid()
        self.patcher = patcher
        self.layers = patcher.model
        self.latents = latents
        self.context = context
        self.ref_scale = float(ref_scale)
        self.start_percent, self.end_percent = float(start_percent), float(end_percent)
        self.fallback_gate = fallback_gate

    def rows(self, transformer_options: dict, batch: int) -> list[tuple[str, list[int] | None]]:
        """``[(kind, rows), ...]`` for this model call (rows None = all); empty outside the step range."""
        if not gate_active(self.uid, self.fallback_gate, transformer_options):
            return []
        cond_or_uncond = transformer_options.get("cond_or_uncond")
        cond = rows_for(batch, cond_or_uncond, False)
        out = [] if cond == [] else [(IMAGE, cond)]
        zero = uncond_rows(batch, cond_or_uncond)
        if zero:
            out.append((ZERO, zero))
        return out


class ReferenceRun(StepRangeResolver):
    """OUTER_SAMPLE wrapper: a fresh feature store for this sampling run, and the step range in sigmas."""

    def __call__(self, executor, *args, **kwargs):
        options = executor.class_obj.model_options.setdefault("transformer_options", {})
        options[store_key(self.entry.uid)] = ReferenceFeatures()
        return super().__call__(executor, *args, **kwargs)


def _options_of(args: list, kwargs: dict) -> dict:
    # WanModel.forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
    return args[5] if len(args) > 5 else kwargs.get("transformer_options", {})


class ReferencePass:
    """DIFFUSION_MODEL wrapper: runs Lynx's reference pass for the kinds this call needs and the run
    lacks, then the call itself."""

    def __init__(self, entry: ReferenceEntry):
        self.entry = entry

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        args = list(args)
        options = _options_of(args, kwargs)
        if options.get(REF_CAPTURE_KEY) is not None:   # another entry's reference pass: run it as is
            return executor(*args, **kwargs)
        key = store_key(self.entry.uid)
        store = options.get(key)
        if store is None:   # a model call outside a sampler: features for this call only
            store = ReferenceFeatures()
            options = {**options, key: store}
            if len(args) > 5:
                args[5] = options
            else:
                kwargs["transformer_options"] = options
        x = args[0]
        needed = [kind for kind, _ in self.entry.rows(options, x.shape[0]) if kind not in store.kv]
        if needed:
            self._capture(executor, needed, store, options, x, args[1], args[2])
        return executor(*args, **kwargs)

    def _capture(self, executor, kinds, store, options, x, timestep, context) -> None:
        entry = self.entry
        n = len(kinds)
        latent = torch.cat([entry.latents[kind] for kind in kinds]).to(x.device, x.dtype)
        capture = ReferenceCapture(entry.uid)
        opts = {k: v for k, v in options.items() if k not in ("iad_gates", call_context.VIDEO_ROWS_KEY)}
        opts.update({REF_CAPTURE_KEY: capture, "cond_or_uncond": [0] * n,
                     "sigmas": torch.zeros(n, device=x.device, dtype=torch.float32)})
        t0 = torch.zeros(n, device=x.device, dtype=timestep.dtype)   # Lynx: timestep 0
        ctx = entry.context.to(context.device, context.dtype).expand(n, -1, -1)
        with torch.no_grad():
            executor(latent, t0, ctx, None, None, opts)
        for row, kind in enumerate(kinds):
            store.kv[kind] = {block: (k[row:row + 1], v[row:row + 1]) for block, (k, v) in capture.kv.items()}


class AddToAttention:
    """An ``optimized_attention_override`` for one self-attention call: the attention result plus
    ``delta`` (once: later attention calls made with the same options pass through unchanged)."""

    def __init__(self, delta: torch.Tensor, previous=None):
        self.delta, self.previous, self.used = delta, previous, False

    def __call__(self, func, *args, **kwargs):
        out = self.previous(func, *args, **kwargs) if self.previous is not None else func(*args, **kwargs)
        if self.used:
            return out
        self.used = True
        return out + self.delta.to(out.dtype)


class WanSelfAttentionReference(SitePatch):
    """Replaces ``blocks.{i}.self_attn.forward``: records the reference K/V during a reference pass,
    adds the reference attention during denoising, otherwise calls the block's own self-attention."""

    def __call__(self, x, freqs, *args, transformer_options={}, **kwargs):
        capture = transformer_options.get(REF_CAPTURE_KEY)
        if capture is not None:
            for entry in self.entries:
                if entry.uid == capture.uid:
                    capture.kv[self.block_index] = entry.layers.block_kv(self.block_index, x, self.module.norm_k)
            return self.inner(x, freqs, *args, transformer_options=transformer_options, **kwargs)
        active = []
        for entry in self.entries:
            store = transformer_options.get(store_key(entry.uid))
            if store is not None:
                active.extend((entry, store.kv[kind][self.block_index], rows)
                              for kind, rows in entry.rows(transformer_options, x.shape[0]) if kind in store.kv)
        if not active:
            return self.inner(x, freqs, *args, transformer_options=transformer_options, **kwargs)
        import comfy.ldm.modules.attention as comfy_attention

        m = self.module
        q = m.norm_q(m.q(x))   # Lynx's reference query: the block's query without RoPE
        delta = torch.zeros_like(q)
        start, stop = video_row_range(transformer_options, x.shape[1]) or (0, x.shape[1])
        for entry, (k, v), rows in active:
            q_rows = (q if rows is None else q[rows])[:, start:stop]
            n = q_rows.shape[0]
            out = comfy_attention.optimized_attention(q_rows, k.to(q).expand(n, -1, -1), v.to(q).expand(n, -1, -1),
                                                      heads=m.num_heads, transformer_options=transformer_options)
            if rows is None:
                delta[:, start:stop] += entry.ref_scale * out
            else:
                delta[rows, start:stop] += entry.ref_scale * out
        opts = dict(transformer_options)
        opts["optimized_attention_override"] = AddToAttention(delta, transformer_options.get("optimized_attention_override"))
        return self.inner(x, freqs, *args, transformer_options=opts, **kwargs)


def apply_reference(model, entry: ReferenceEntry, num_blocks: int):
    """A clone of the Wan ``model`` with Lynx's reference adapter (``entry``) in every block."""
    import comfy.patcher_extension

    patched = model.clone()
    call_context.install(patched, causal=False)   # which rows are the video, per call
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"iad_ref_run_{entry.uid}",
                                 ReferenceRun(entry))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, f"iad_ref_pass_{entry.uid}",
                                 ReferencePass(entry))
    patch_sites(patched, range(num_blocks), entry, WanSelfAttentionReference, "blocks.{}.self_attn".format)
    patched.set_model_patch(AdapterOwner(entry.patcher), ADAPTER_PATCH_KEY)
    return patched
