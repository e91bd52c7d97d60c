"""Training objectives of IaD and the PersonalVideo rewards (docs/design.md, section 5).

All functions take plain tensors and return scalar tensors to *minimise*; each is documented with
its ideal value and the invariances the tests check.

- :func:`identity_decoupling_loss`: InfoNCE on ``z_id`` across people + cross-covariance
  decorrelation of ``z_id`` and ``z_act`` + reconstruction of ``e`` from both.
- :func:`text_alignment_loss`: contrastive alignment of ``z_act`` with the text embedding of the
  action described for that frame (through :class:`ActionTextProjector`).
- :func:`prompt_following_loss`: during adapter training, the identity branch must not change
  what the prompt does (the text guidance direction with identity = without identity).
- :func:`identity_consistency_reward`: 1 - cos between a differentiable recognizer's embedding of
  the reference and of sampled generated frames (PersonalVideo ICR).
- :func:`semantic_consistency_reward`: KL between softmax-normalised reward scores of frames from
  the frozen and the tuned model (PersonalVideo SCR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


@dataclass
class LossTerms:
    """A weighted total and its unweighted parts (for logging)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def item_dict(self) -> dict[str, float]:
        return {"total": float(self.total.detach()), **{k: float(v.detach()) for k, v in self.parts.items()}}


def multi_positive_info_nce(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Contrastive loss over a batch where rows with the same label are positives.

    For anchor i with positives P(i) (same label, j != i) and all others A(i) (j != i):
    ``l_i = -log( sum_{p in P(i)} exp(s_ip / T) / sum_{a in A(i)} exp(s_ia / T) )``, s = cosine.
    It tends to 0 when every positive is much closer than every negative, whatever the number
    of positives; anchors without a positive in the batch are skipped.
    Invariant to the scale of each row and to permutations of the batch.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be [B, D] with labels [B], got {tuple(features.shape)} and {tuple(labels.shape)}")
    z = F.normalize(features.float(), dim=-1, eps=EPS)
    logits = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    same = (labels[:, None] == labels[None, :]) & ~eye
    has_positive = same.any(1)
    if not bool(has_positive.any()):
        raise ValueError("InfoNCE needs at least two samples with the same label in the batch (e.g. two frames of one person)")
    logits = logits.masked_fill(eye, float("-inf"))
    log_denominator = torch.logsumexp(logits, dim=1)
    log_numerator = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    return (log_denominator - log_numerator)[has_positive].mean()


def cross_correlation_penalty(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared Pearson correlation between every feature of ``a[B, Da]`` and of ``b[B, Db]``
    over the batch: 0 when the two are linearly uncorrelated, 1 when perfectly correlated.
    Invariant to shifting or (positively or negatively) rescaling any feature."""
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError("cross-correlation needs two [B, *] tensors with the same B >= 2")
    a = a.float() - a.float().mean(0, keepdim=True)
    b = b.float() - b.float().mean(0, keepdim=True)
    # clamp before the square root: a feature that is constant over the batch (one clip's frames
    # with batch_size 1) has a zero norm, and sqrt's gradient there is infinite (0 * inf = NaN)
    a = a / a.pow(2).sum(0, keepdim=True).clamp_min(EPS * EPS).sqrt()
    b = b / b.pow(2).sum(0, keepdim=True).clamp_min(EPS * EPS).sqrt()
    return (a.T @ b).pow(2).mean()


def reconstruction_loss(reconstructed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos(e_hat, e)) + mean(|e_hat| / |e| - 1)^2``: 0 exactly when ``e_hat == e``."""
    cos = F.cosine_similarity(reconstructed.float(), target.float(), dim=-1, eps=EPS)
    ratio = reconstructed.float().norm(dim=-1) / target.float().norm(dim=-1).clamp_min(EPS)
    return (1 - cos).mean() + (ratio - 1).pow(2).mean()


def identity_decoupling_loss(
    z_id: torch.Tensor,
    z_act: torch.Tensor,
    person_ids: torch.Tensor,
    embeddings: torch.Tensor | None = None,
    reconstructed: torch.Tensor | None = None,
    *,
    temperature: float = 0.1,
    w_nce: float = 1.0,
    w_decorrelation: float = 1.0,
    w_reconstruction: float = 1.0,
) -> LossTerms:
    """Identity Decoupling Loss (docs/design.md, eq. IDL).

    ``L_IDL = InfoNCE(z_id; person) + w_dec * mean corr(z_id, z_act)^2 + w_rec * rec(g(z_id, z_act), e)``.
    Frames of the same person (with different actions) must agree in ``z_id`` and differ from
    other people; ``z_id`` must carry no linear trace of ``z_act``; and the two together must
    reconstruct ``e`` so the split loses nothing. Reconstruction is skipped when ``embeddings`` or
    ``reconstructed`` is None.
    """
    nce = multi_positive_info_nce(z_id, person_ids, temperature)
    decor = cross_correlation_penalty(z_id, z_act)
    parts = {"id_nce": nce, "decorrelation": decor}
    total = w_nce * nce + w_decorrelation * decor
    if embeddings is not None and reconstructed is not None:
        rec = reconstruction_loss(reconstructed, embeddings)
        parts["reconstruction"] = rec
        total = total + w_reconstruction * rec
    return LossTerms(total, parts)


class ActionTextProjector(nn.Module):
    """Maps ``z_act[B, A]`` and action-text embeddings ``t[B, T]`` into one shared space for the
    Text Alignment Loss (trained together with the decoupler; not needed at inference)."""

    def __init__(self, act_dim: int, text_dim: int, shared_dim: int = 128) -> None:
        super().__init__()
        self.act = nn.Linear(act_dim, shared_dim)
        self.text = nn.Linear(text_dim, shared_dim)

    def forward(self, z_act: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.act(z_act), self.text(text.to(self.text.weight.dtype))


def text_alignment_loss(
    act_features: torch.Tensor,
    text_features: torch.Tensor,
    action_ids: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Text Alignment Loss (docs/design.md, eq. TAL): symmetric contrastive loss pairing each
    frame's ``z_act`` feature with the embedding of the action text described for that frame.

    ``action_ids`` marks frames that share the same action text: they are positives of each other
    (not negatives), so captions repeated in a batch do not fight. Without it, row i's only
    positive is text i. ~0 when every frame is far closer to its own action text than to the
    others; invariant to the scale of the features and to permuting (frame, text) pairs together.
    """
    if act_features.shape[0] != text_features.shape[0]:
        raise ValueError("text_alignment_loss needs one action text per frame")
    a = F.normalize(act_features.float(), dim=-1, eps=EPS)
    t = F.normalize(text_features.float(), dim=-1, eps=EPS)
    logits = a @ t.T / temperature
    n = a.shape[0]
    if action_ids is None:
        positive = torch.eye(n, dtype=torch.bool, device=a.device)
    else:
        positive = action_ids[:, None] == action_ids[None, :]

    def direction(lg: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(lg, 1) - torch.logsumexp(lg.masked_fill(~pos, float("-inf")), 1)).mean()

    return 0.5 * (direction(logits, positive) + direction(logits.T, positive.T))


def prompt_following_loss(
    pred_text_id: torch.Tensor,
    pred_null_id: torch.Tensor,
    pred_text_base: torch.Tensor,
    pred_null_base: torch.Tensor,
) -> torch.Tensor:
    """Prompt-following term for adapter training (docs/design.md, eq. PF).

    With the identity branch on, the prompt must still steer the model the way it steers the base
    model: the text-guidance direction ``d_id = pred(x_t, text, id) - pred(x_t, null, id)`` must
    match ``d_base = pred(x_t, text) - pred(x_t, null)`` (base model, no identity; a detached
    target). ``L_PF = mean_b |d_id - d_base|^2 / (mean_b |d_base|^2 + eps)``: 0 when the identity
    leaves the prompt's effect unchanged, invariant to identity changes shared by both branches
    (the face itself), and to the overall scale of the predictions.
    """
    d_id = (pred_text_id - pred_null_id).float().flatten(1)
    d_base = (pred_text_base - pred_null_base).detach().float().flatten(1)
    return ((d_id - d_base).pow(2).sum(1) / d_base.pow(2).sum(1).clamp_min(EPS)).mean()


def identity_consistency_reward(
    reference_embeddings: torch.Tensor,
    frame_embeddings: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """PersonalVideo Identity Consistency Reward, as a loss: ``mean_f (1 - cos(r, e_f))``.

    ``reference_embeddings[R, D]`` (or ``[D]``) of the reference photos (their normalised mean is
    the target, detached), ``frame_embeddings[F, D]`` from a differentiable face recognizer run on
    sampled generated frames; ``valid[F]`` masks frames where no face was found. 0 when every frame
    has the reference's identity direction; invariant to embedding scale and frame order.
    """
    ref = reference_embeddings.detach().float()
    if ref.dim() == 1:
        ref = ref.unsqueeze(0)
    target = F.normalize(F.normalize(ref, dim=-1, eps=EPS).mean(0), dim=0, eps=EPS)
    cos = F.normalize(frame_embeddings.float(), dim=-1, eps=EPS) @ target
    if valid is not None:
        valid = valid.to(torch.bool)
        if not bool(valid.any()):
            return frame_embeddings.sum() * 0.0   # no face in any sampled frame: no identity signal
        cos = cos[valid]
    return (1 - cos).mean()


def sample_frame_indices(num_frames: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` frame indices, one drawn uniformly from each of ``k`` equal segments (covers the clip)."""
    if num_frames <= 0 or k <= 0:
        raise ValueError("need at least one frame and k >= 1")
    k = min(k, num_frames)
    edges = torch.linspace(0, num_frames, k + 1)
    u = torch.rand(k, generator=generator)
    return (edges[:-1] + u * (edges[1:] - edges[:-1])).long().clamp_max(num_frames - 1)


def semantic_consistency_reward(scores_frozen: torch.Tensor, scores_tuned: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """PersonalVideo Semantic Consistency Reward, as a loss:
    ``KL( softmax(s_frozen / T) || softmax(s_tuned / T) )`` over the frames of each sample, averaged.

    ``scores_*[B, F]`` are per-frame reward scores (e.g. text-video reward) of frames generated by
    the frozen base model and by the identity-tuned model from the same noise and prompt. The
    frozen side is the detached target. 0 when the tuned model keeps the frozen model's relative
    semantics; invariant to adding a constant to all scores of a sample.
    """
    if scores_frozen.shape != scores_tuned.shape:
        raise ValueError(f"score shapes differ: {tuple(scores_frozen.shape)} vs {tuple(scores_tuned.shape)}")
    if scores_tuned.dim() == 1:
        scores_frozen, scores_tuned = scores_frozen.unsqueeze(0), scores_tuned.unsqueeze(0)
    log_p = F.log_softmax(scores_frozen.detach().float() / temperature, dim=-1)
    log_q = F.log_softmax(scores_tuned.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def decoupler_training_loss(
    decoupler: nn.Module,
    projector: ActionTextProjector,
    embeddings: torch.Tensor,
    person_ids: torch.Tensor,
    action_text: torch.Tensor,
    action_ids: torch.Tensor | None = None,
    *,
    w_text: float = 1.0,
    temperature: float = 0.1,
    w_decorrelation: float = 1.0,
    w_reconstruction: float = 1.0,
) -> LossTerms:
    """``L = L_IDL + w_text * L_TAL`` for one batch of (frame embedding, person, action text)."""
    z_id, z_act = decoupler(embeddings)
    reconstructed = decoupler.reconstruct(z_id, z_act)
    idl = identity_decoupling_loss(z_id, z_act, person_ids, embeddings, reconstructed, temperature=temperature,
                                   w_decorrelation=w_decorrelation, w_reconstruction=w_reconstruction)
    act_features, text_features = projector(z_act, action_text)
    tal = text_alignment_loss(act_features, text_features, action_ids, temperature)
    return LossTerms(idl.total + w_text * tal, {**idl.parts, "text_alignment": tal})
