"""The training objectives: the base model's flow-matching loss as ComfyUI computes it (``mode:
base``) and IaD's (``mode: adapter``: diffusion, identity decoupling, text alignment, prompt following,
SCR and ICR). The model is called as ComfyUI's samplers call it: ``apply_model`` of the patched clone
with the conditioning the model's own ``extra_conds`` builds (LTX-2 runs its text connectors there,
HunyuanVideo 1.5 gets its image-condition channels).

The base model (loading, checks, the training patch) is ``base_model.py``; the VAE's mode
``vae_training.py``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import IdentityAdapter
from ..comfy_runtime import training_forward
from ..decoupling import Decoupler
from ..losses import (ActionTextProjector, identity_consistency_reward, identity_decoupling_loss,
                      prompt_following_loss, sample_frame_indices, semantic_consistency_reward, text_alignment_loss)
from .base_model import TRAIN_KEY
from .batches import SampleDraws
from .config import TrainConfig
from .data import pad_text, sample_generator


# Families whose ComfyUI blocks update their hidden states in place after an op saved them for
# backward (LTX's ``x.addcmul_``/``vx.add_``, HunyuanVideo's ``img += ...`` after its norms): harmless
# at inference, but once the identity makes those states require gradients autograd refuses them.
IN_PLACE_BLOCK_FAMILIES = ("ltxv", "ltx2", "hunyuan_video15")
# Families whose ``extra_conds`` are built for the whole batch in one call (FlowObjective._conds).
BATCHED_CONDS_FAMILIES = ("wan",)


@contextlib.contextmanager
def saved_activation_copies():
    """Within the block: autograd saves a copy of each activation instead of the tensor itself, so a
    later in-place update inside ComfyUI's block cannot change what backward reads. Parameters
    (the frozen weights, the bulk of what is saved) are never copied. Scoped to one model call; no
    module is patched."""
    def pack(t):
        return t if isinstance(t, nn.Parameter) else t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


class FlowObjective(nn.Module):
    """What both training modes share: the base model's flow-matching objective as ComfyUI computes
    it (``apply_model`` of the patched clone), seeded sigmas and noise, caption dropout."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self._runtime: dict = {}

    def attach(self, patched, base_patcher, shift: float, gather=None, prompt_bank=None, icr=None, family: str = "wan") -> None:
        self._runtime = {"patched": patched, "base": base_patcher, "shift": shift, "gather": gather, "family": family,
                         "prompt_bank": prompt_bank, "icr": icr,
                         "draws": SampleDraws(self.config, shift, prompt_bank[2] if prompt_bank else None)}

    def _model_call(self, x_t, sigma, context, tokens):
        patched = self._runtime["patched"]
        options = dict(patched.model_options.get("transformer_options", {}))
        if tokens is not None:
            options[TRAIN_KEY] = {"adapter": self.adapter, "tokens": tokens, "weight": self.config.identity_weight}
        # bf16: only the base-model call runs under autocast; the decoupler, resampler and losses stay fp32.
        autocast = (torch.autocast(x_t.device.type, dtype=torch.bfloat16) if self.config.precision == "bf16"
                    else contextlib.nullcontext())
        copies = (saved_activation_copies() if self._runtime["family"] in IN_PLACE_BLOCK_FAMILIES and torch.is_grad_enabled()
                  else contextlib.nullcontext())
        with autocast, copies:
            denoised = patched.model.apply_model(x_t, sigma, transformer_options=options, **self._conds(x_t, context))
        return (x_t - denoised.to(x_t.dtype)) / sigma.view(-1, *([1] * (x_t.dim() - 1)))   # velocity

    def _conds(self, x_t: torch.Tensor, context: torch.Tensor, per_sample: bool | None = None) -> dict:
        """The model inputs ComfyUI's sampler would give for this text: the model's own
        ``extra_conds`` (Wan T2V: the text only; LTX-2: its text connectors' output and frame rate;
        HunyuanVideo 1.5: the empty image-condition channels and guidance), batched as the sampler does."""
        base = self._runtime["patched"].model
        # One sample at a time, then batched with the conds' own concat, as the sampler batches
        # conditionings (LTX-2's text connectors take one prompt per call); Wan T2V's conds treat each
        # sample alone (the text as it is, no image channels), so one call for its batch gives the same
        # tensors (tests/test_train_pipeline.py) without a call per sample each step. ``latent_shapes``
        # as the v0.2x sampler passes it (LTX-2 unpacks its input by it); older ComfyUI ignores it.
        extra = {}
        if self._runtime["family"] == "ltxv":
            # LTX-Video takes T5's attention mask; captions are zero-padded, so the mask is their non-zero rows.
            extra["attention_mask"] = (context.abs().sum(-1) != 0).long()
        if per_sample is None:
            per_sample = self._runtime["family"] not in BATCHED_CONDS_FAMILIES
        spans = [slice(i, i + 1) for i in range(x_t.shape[0])] if per_sample else [slice(None)]
        rows = [{name: cond.process_cond(batch_size=x_t[span].shape[0], area=None) for name, cond in
                 base.extra_conds(noise=x_t[span], cross_attn=context[span], device=x_t.device, pooled_output=None,
                                  latent_shapes=[x_t.shape], **{k: v[span] for k, v in extra.items()}).items()}
                for span in spans]
        return {name: cond.concat([row[name] for row in rows[1:]]) for name, cond in rows[0].items()}

    @property
    def draws(self) -> SampleDraws:
        """The seeded per-sample draws (sigma, noise, caption dropout) as of ``attach``."""
        return self._runtime["draws"]

    def noised(self, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0, noise, sigma, x_t, context) of a batch: ComfyUI's flow convention
        ``x_t = sigma * noise + (1 - sigma) * x0`` on the model's own latent format."""
        batch = self.draws.draw(batch)     # the trainer's batches come drawn (batches.BatchSource); others get them here
        x0 = self._runtime["patched"].model.process_latent_in(batch["latents"].to(device, non_blocking=True))
        sigma, noise = (batch[k].to(device, non_blocking=True) for k in ("sigma", "noise"))
        if noise.shape != x0.shape:
            raise RuntimeError(f"the noise was drawn in the stored latents' shape {tuple(noise.shape)}, but the model's "
                               f"latent format made {tuple(x0.shape)} of them")
        x_t = sigma.view(-1, 1, 1, 1, 1) * noise + (1 - sigma.view(-1, 1, 1, 1, 1)) * x0
        return x0, noise, sigma, x_t, batch["model_context"].to(device, non_blocking=True)


class BaseTrainable(FlowObjective):
    """``mode: base``: the base model's own parameters (those ``trainable`` selects) with its
    flow-matching loss and no identity -- pre-training or fine-tuning a (tiny or real) Wan T2V model.
    The diffusion model is a submodule here, so the optimizer, DDP and FSDP see its parameters; it is
    still run through the ModelPatcher clone, exactly as a workflow runs it."""

    def __init__(self, diffusion_model: nn.Module, config: TrainConfig):
        super().__init__(config)
        self.diffusion_model = diffusion_model

    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = next(self.diffusion_model.parameters()).device
        x0, noise, sigma, x_t, context = self.noised(batch, device)
        v_pred = self._model_call(x_t, sigma, context, None)
        diffusion = (v_pred.float() - (noise - x0).float()).pow(2).flatten(1).mean(1).mean()
        total = self.config.losses.diffusion * diffusion
        return total, {"diffusion": diffusion, "total": total}


class IaDTrainable(FlowObjective):
    """The trained parameters (adapter: decoupler + resampler + K/V; the TAL projector) and the
    objective. The frozen base is held outside the module tree, so DDP/FSDP see only these."""

    def __init__(self, adapter: IdentityAdapter, config: TrainConfig, text_dim: int = 4096):
        super().__init__(config)
        self.adapter = adapter
        self.base_model = None          # the diffusion model, when base_trainable trains part of it (attach_base)
        self.projector = (ActionTextProjector(adapter.config.decoupler_act_dim, text_dim)
                          if isinstance(adapter.decoupler, Decoupler) else None)

    def attach_base(self, diffusion_model: nn.Module) -> None:
        """Make the base's diffusion model a submodule, so that the optimizer, DDP and the training
        state see the base parameters ``base_trainable`` selected (the rest stay frozen)."""
        self.base_model = diffusion_model

    def identity_tokens(self, references: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.adapter.identity_embedding(r) for r in references])  # decoupler.fuse, as IaD Identity does
        return self.adapter.identity_tokens(z)

    # -- the objective ---------------------------------------------------------------------------
    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.config.losses
        device = next(self.adapter.parameters()).device
        base = self._runtime["patched"].model
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=device)

        x0, noise, sigma, x_t, context = self.noised(batch, device)
        tokens = self.identity_tokens(batch["references"].to(device, non_blocking=True))
        v_pred = self._model_call(x_t, sigma, context, tokens)
        per_sample = (v_pred.float() - (noise - x0).float()).pow(2).flatten(1).mean(1)
        parts["diffusion"] = per_sample.mean()
        total = total + w.diffusion * parts["diffusion"]

        if self.projector is not None and (w.identity_decoupling > 0 or w.text_alignment > 0):
            gather = self._runtime["gather"] or (lambda t: t)
            e = gather(batch["frame_embeddings"].to(device, non_blocking=True))
            persons = gather(batch["frame_person"].to(device, non_blocking=True))
            actions = gather(batch["frame_action"].to(device, non_blocking=True))
            action_text = gather(batch["frame_action_text"].to(device, non_blocking=True))
            z_id, z_act = self.adapter.decoupler(e)
            recon = self.adapter.decoupler.reconstruct(z_id, z_act)
            idl = identity_decoupling_loss(z_id, z_act, persons, e, recon, temperature=w.temperature,
                                           w_decorrelation=w.decorrelation, w_reconstruction=w.reconstruction)
            parts.update(idl.parts)
            parts["identity_decoupling"] = idl.total
            a, t = self.projector(z_act, action_text)
            parts["text_alignment"] = text_alignment_loss(a, t, actions, w.temperature)
            total = total + w.identity_decoupling * idl.total + w.text_alignment * parts["text_alignment"]

        if with_extras and w.prompt_following.weight > 0 and step % w.prompt_following.every == 0:
            parts["prompt_following"] = self._prompt_following(batch, step, x_t, sigma, tokens, device)
            total = total + w.prompt_following.weight * parts["prompt_following"]
        if with_extras and w.scr.weight > 0 and step % w.scr.every == 0:
            with torch.no_grad():
                v_frozen = self._model_call(x_t, sigma, context, None)
            target = (noise - x0).float()
            frame_scores = lambda v: -(v.float() - target).pow(2).mean(dim=(1, 3, 4))   # noqa: E731  [B, T']
            parts["scr"] = semantic_consistency_reward(frame_scores(v_frozen), frame_scores(v_pred), w.scr.temperature)
            total = total + w.scr.weight * parts["scr"]
        if with_extras and w.icr.weight > 0 and step % w.icr.every == 0:
            s = sigma.view(-1, 1, 1, 1, 1)
            x0_pred = x_t - s * v_pred
            parts["icr"] = self._icr(batch, step, base.process_latent_out(x0_pred), device)
            total = total + w.icr.weight * parts["icr"]
        parts["total"] = total
        return total, parts

    def _prompt_following(self, batch, step, x_t, sigma, tokens, device) -> torch.Tensor:
        """Simulated prompt augmentation: prompts from the bank (or the caption) must steer the model
        the same with and without the identity (docs/training.md, L_PF)."""
        prompts, bank, null = self._runtime["prompt_bank"]
        pf = self.config.losses.prompt_following
        texts = []
        for i, position in enumerate(batch["positions"]):
            g = sample_generator(self.config.seed, 0, position, salt=3)
            if float(torch.rand((), generator=g)) < pf.bank_probability:
                texts.append(bank[int(torch.randint(len(bank), (1,), generator=g))])
            else:
                texts.append(batch["context"][i])
        length = max(t.shape[0] for t in bank + [null, batch["context"][0]])   # fixed: independent of the batch
        prompt = pad_text(texts, length).to(device)
        nulls = pad_text([null] * len(texts), length).to(device)
        text_id = self._model_call(x_t, sigma, prompt, tokens)
        null_id = self._model_call(x_t, sigma, nulls, tokens)
        with torch.no_grad():
            text_base = self._model_call(x_t, sigma, prompt, None)
            null_base = self._model_call(x_t, sigma, nulls, None)
        return prompt_following_loss(text_id, null_id, text_base, null_base)

    def _icr(self, batch, step, latent_pred, device) -> torch.Tensor:
        """PersonalVideo ICR: decode the predicted clean latent with the Wan VAE, crop the face at the
        target's tracked box, embed with a differentiable recognizer, compare with the reference."""
        vae, recognizer = self._runtime["icr"]
        pixels = vae.first_stage_model.decode(latent_pred.to(next(vae.first_stage_model.parameters()).dtype))
        pixels = pixels.float().clamp(-1, 1)                      # [B, 3, T, H, W]
        crops, refs, valid = [], [], []
        boxes_all = batch["target_boxes"]
        for b in range(pixels.shape[0]):
            boxes = boxes_all[b]
            g = sample_generator(self.config.seed, 0, batch["positions"][b], salt=4)
            for f in sample_frame_indices(boxes.shape[0], self.config.losses.icr.frames, g).tolist():
                f_pix = min(f, pixels.shape[2] - 1) if boxes.shape[0] == pixels.shape[2] else round(f * (pixels.shape[2] - 1) / max(boxes.shape[0] - 1, 1))
                box = boxes[f]
                ok = bool(torch.isfinite(box).all())
                crops.append(_crop_face(pixels[b, :, f_pix], box if ok else None))
                valid.append(ok)
            refs.append(batch["reference_crops"][b])
        frame_emb = recognizer(torch.stack(crops))                # RGB [-1, 1] -> unit embeddings
        ref = torch.stack(refs).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            ref_emb = recognizer(F.interpolate(ref, size=(112, 112), mode="bilinear", align_corners=False))
        return identity_consistency_reward(ref_emb, frame_emb, torch.tensor(valid, device=device))


def _crop_face(image: torch.Tensor, box: torch.Tensor | None, size: int = 112) -> torch.Tensor:
    """A square crop around ``box`` (1.2x, clamped to the frame) resized to ``size`` (differentiable)."""
    _, h, w = image.shape
    if box is None:
        region = image
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * max(x2 - x1, y2 - y1)
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
        region = image[:, top:max(bottom, top + 1), left:max(right, left + 1)]
    return F.interpolate(region[None], size=(size, size), mode="bilinear", align_corners=False)[0]


class TorchRecognizer(nn.Module):
    """IR-SE50 as the differentiable recognizer for ICR: RGB [-1, 1] crops -> unit embeddings."""

    def __init__(self, path: str):
        super().__init__()
        from ..recognizers import load_irse50

        self.net = load_irse50(path)
        self.net.requires_grad_(False)
        self.net.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        net = getattr(self.net, "net", self.net)
        return F.normalize(net(rgb.flip(1)).float(), dim=-1)   # IR-SE50 takes BGR
