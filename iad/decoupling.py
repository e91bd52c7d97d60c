"""Identity-action decoupling of face embeddings (docs/design.md, sections 2-3).

A face embedding ``e`` (ArcFace, 512-d) mixes who the person is with how the face looks in this
photo: expression, pose, lighting ("action"). Only the identity part ``z_id`` should condition the
video model, so the prompt alone decides the action.

- :class:`Decoupler` (trained): ``e -> (z_id, z_act)`` with a reconstruction head
  ``g(z_id, z_act) ~ e`` so the split loses nothing. ``z_id`` stays in the embedding space
  (same width and norm as ``e``) so the identity resampler reads it like a face embedding.
- :class:`TrainingFreeDecoupler`: an orthonormal basis ``P[K, D]`` of the within-identity
  variation, estimated from several photos/frames (of the person, or of many people: action
  directions are largely shared); ``z_id = e - s * P^T P e`` rescaled to ``|e|``; ``z_act = P e``.

Both expose ``identity(e, strength)``, ``action(e)`` and ``fuse(embeddings, strength)`` (several
references of one person -> one ``z_id``, combined in the decoupled space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"decoupling strength must be between 0 and 1, got {strength}")
    return strength


def _as_batch(e: torch.Tensor, dim: int, what: str = "face embeddings") -> torch.Tensor:
    if e.dim() == 1:
        e = e.unsqueeze(0)
    if e.dim() != 2 or e.shape[-1] != dim:
        raise ValueError(f"{what} must have shape [N, {dim}], got {tuple(e.shape)}")
    return e


def _fuse_rows(z: torch.Tensor, reference_norm: torch.Tensor) -> torch.Tensor:
    """Robust mean of identity vectors: one re-weighting pass down-weights a reference that
    disagrees with the others (a mis-detected face, an extreme expression the basis missed)."""
    unit = F.normalize(z, dim=-1, eps=EPS)
    mean = F.normalize(unit.mean(0), dim=0, eps=EPS)
    if z.shape[0] > 2:
        weights = (unit @ mean).clamp_min(0.0) ** 2
        if weights.sum() > EPS:
            mean = F.normalize((weights[:, None] * unit).sum(0), dim=0, eps=EPS)
    return mean * reference_norm


class _MLP(nn.Sequential):
    def __init__(self, d_in: int, hidden: int, d_out: int, operations=nn) -> None:
        super().__init__(operations.Linear(d_in, hidden), nn.GELU(), operations.Linear(hidden, hidden), nn.GELU(),
                         operations.Linear(hidden, d_out))


class Decoupler(nn.Module):
    """Trained split ``e[B, D] -> z_id[B, D], z_act[B, A]`` with reconstruction ``g(z_id, z_act) ~ e``.

    ``z_id = |e| * normalize(e + f_id(e))``: a residual on the embedding, zero at initialisation,
    so an untrained decoupler passes identities through unchanged and ``z_id`` keeps the
    recognizer's geometry the resampler was trained on. ``z_act = f_act(e)``.
    ``g(z_id, z_act) = z_id + f_rec([z_id / |z_id|, z_act])``.
    """

    def __init__(self, embed_dim: int = 512, act_dim: int = 64, hidden: int = 1024, operations=nn) -> None:
        super().__init__()
        self.embed_dim, self.act_dim = embed_dim, act_dim
        self.id_head = _MLP(embed_dim, hidden, embed_dim, operations)
        self.act_head = _MLP(embed_dim, hidden, act_dim, operations)
        self.recon_head = _MLP(embed_dim + act_dim, hidden, embed_dim, operations)
        self.reset_parameters()

    def reset_parameters(self, zero_residual: bool = True) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        if zero_residual:
            for head in (self.id_head, self.recon_head):
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = _as_batch(e, self.embed_dim).to(self.id_head[0].weight.dtype)
        norm = e.norm(dim=-1, keepdim=True).clamp_min(EPS)
        z_id = F.normalize(e + self.id_head(e), dim=-1, eps=EPS) * norm
        return z_id, self.act_head(e)

    def identity(self, e: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``z_id``; ``strength < 1`` interpolates towards the raw embedding (same norm)."""
        strength = _check_strength(strength)
        e = _as_batch(e, self.embed_dim).to(self.id_head[0].weight.dtype)
        z_id, _ = self(e)
        if strength == 1.0:
            return z_id
        mixed = (1 - strength) * e + strength * z_id
        return F.normalize(mixed, dim=-1, eps=EPS) * e.norm(dim=-1, keepdim=True)

    def action(self, e: torch.Tensor) -> torch.Tensor:
        return self(e)[1]

    def reconstruct(self, z_id: torch.Tensor, z_act: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(z_id, dim=-1, eps=EPS)
        return z_id + self.recon_head(torch.cat([unit, z_act], dim=-1))

    def fuse(self, embeddings: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Several embeddings of one person -> one ``z_id[D]`` (robust mean of their ``z_id``)."""
        e = _as_batch(embeddings, self.embed_dim, "reference embeddings")
        return _fuse_rows(self.identity(e, strength), e.norm(dim=-1).mean())


class TrainingFreeDecoupler(nn.Module):
    """Project the within-identity variation subspace out of face embeddings; no training needed.

    ``basis`` has orthonormal rows ``P[K, D]`` (K may be 0: then nothing is removed).
    ``identity(e, s) = |e| * normalize(e - s * (e P^T) P)``; ``action(e) = e P^T``.

    How the basis is obtained (see :meth:`estimate_basis`):
    - several photos/frames of the person: their deviations from the person's mean;
    - photos/frames of many people (``groups`` labels who is who): deviations from each person's
      mean, pooled, which finds the action directions shared across people;
    - a single reference carries no within-identity variation: the decoupler then keeps the basis
      it was given (``prior``: a basis shipped inside an IaD checkpoint, or estimated earlier) and,
      without one, removes nothing and says so in :attr:`notes`.
    """

    def __init__(self, basis: torch.Tensor | None = None, strength: float = 1.0, embed_dim: int = 512) -> None:
        super().__init__()
        if basis is None:
            basis = torch.zeros(0, embed_dim)
        self.register_buffer("basis", basis.detach().clone().float())
        self.embed_dim = int(self.basis.shape[1])
        self.strength = _check_strength(strength)
        self.notes: list[str] = []

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def set_basis(self, basis: torch.Tensor) -> "TrainingFreeDecoupler":
        """Replace the basis by an orthonormal basis of the span of ``basis``'s rows."""
        basis = _as_batch(basis, self.embed_dim, "decoupling basis") if basis.numel() else basis.reshape(0, self.embed_dim)
        basis = basis.float()
        gram = basis @ basis.T
        if not torch.allclose(gram, torch.eye(basis.shape[0], device=basis.device), atol=1e-5):
            basis = orthonormal_rows(basis)   # an already orthonormal basis is kept bit for bit
        self.basis = basis.to(self.basis.device)
        return self

    # -- estimation -------------------------------------------------------------------------------
    @staticmethod
    def estimate_basis(
        embeddings: torch.Tensor,
        groups: torch.Tensor | list[int] | None = None,
        max_rank: int = 8,
        min_variance_fraction: float = 0.05,
    ) -> torch.Tensor:
        """Principal directions of within-identity variation, ``[K, D]`` with orthonormal rows.

        Each embedding is L2-normalised and centred on its group's mean (``groups=None``: all one
        person); the pooled residuals' principal directions that each explain at least
        ``min_variance_fraction`` of the within-identity variance are kept, at most ``max_rank``
        and at most (number of embeddings - number of groups). The floor keeps isotropic noise
        (which spreads its variance thinly over all D directions) out of the basis.
        """
        e = F.normalize(embeddings.float(), dim=-1, eps=EPS)
        if e.dim() != 2:
            raise ValueError(f"embeddings must be [N, D], got {tuple(embeddings.shape)}")
        if groups is None:
            labels = torch.zeros(e.shape[0], dtype=torch.long)
        else:
            labels = torch.as_tensor(groups, dtype=torch.long).reshape(-1)
            if labels.numel() != e.shape[0]:
                raise ValueError(f"groups has {labels.numel()} labels for {e.shape[0]} embeddings")
        residuals = []
        for label in labels.unique():
            members = e[labels == label]
            if members.shape[0] >= 2:
                residuals.append(members - members.mean(0, keepdim=True))
        dof = e.shape[0] - int(labels.unique().numel())
        if not residuals or dof <= 0:
            return torch.zeros(0, e.shape[1])
        r = torch.cat(residuals)
        _, s, vh = torch.linalg.svd(r, full_matrices=False)
        var = s**2
        total = var.sum()
        if total <= EPS:
            return torch.zeros(0, e.shape[1])
        keep = int(((var / total) >= min_variance_fraction).sum())
        keep = min(keep, max_rank, dof)
        return vh[:keep].contiguous()

    @classmethod
    def fit(
        cls,
        embeddings: torch.Tensor,
        groups: torch.Tensor | list[int] | None = None,
        *,
        prior: torch.Tensor | None = None,
        strength: float = 1.0,
        max_rank: int = 8,
        min_variance_fraction: float = 0.05,
    ) -> "TrainingFreeDecoupler":
        """Estimate the basis from ``embeddings`` (merged after ``prior`` when given)."""
        embeddings = _as_batch(embeddings, embeddings.shape[-1], "embeddings")
        dim = int(embeddings.shape[-1])
        estimated = cls.estimate_basis(embeddings, groups, max_rank, min_variance_fraction)
        notes = []
        parts = []
        if prior is not None and prior.numel():
            parts.append(prior.float().reshape(-1, dim))
            notes.append(f"started from a given basis of {parts[0].shape[0]} directions")
        if estimated.shape[0]:
            parts.append(estimated)
            notes.append(f"estimated {estimated.shape[0]} within-identity directions from {embeddings.shape[0]} embeddings")
        elif embeddings.shape[0] < 2 or groups is None:
            notes.append(
                "a single reference shows no within-identity variation: "
                + ("using the given basis only" if parts else "no action directions known, the embedding is used as is")
            )
        basis = torch.cat(parts) if parts else torch.zeros(0, dim)
        decoupler = cls(torch.zeros(0, dim), strength=strength, embed_dim=dim).set_basis(basis)
        decoupler.notes = notes
        return decoupler

    # -- use ----------------------------------------------------------------------------------------
    def identity(self, e: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        s = self.strength if strength is None else _check_strength(strength)
        e = _as_batch(e, self.embed_dim)
        if self.rank == 0 or s == 0.0:
            return e
        p = self.basis.to(device=e.device, dtype=torch.float32)
        x = e.float()
        projected = x - s * (x @ p.T) @ p
        out = F.normalize(projected, dim=-1, eps=EPS) * x.norm(dim=-1, keepdim=True)
        return out.to(e.dtype)

    def action(self, e: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``e`` in the action subspace, ``[B, K]``."""
        e = _as_batch(e, self.embed_dim)
        return e.float() @ self.basis.to(e.device).T

    def fuse(self, embeddings: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        e = _as_batch(embeddings, self.embed_dim, "reference embeddings")
        return _fuse_rows(self.identity(e, strength).float(), e.float().norm(dim=-1).mean()).to(e.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, embed_dim={self.embed_dim}, strength={self.strength}"


def orthonormal_rows(basis: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal rows spanning the rows of ``basis``, earlier rows first (Gram-Schmidt, twice
    for stability); rows already in the span of earlier ones are dropped."""
    dim = basis.shape[-1]
    rows: list[torch.Tensor] = []
    for row in basis.reshape(-1, dim).double():
        scale = float(row.norm())
        for _ in range(2):
            for q in rows:
                row = row - (row @ q) * q
        if scale > 0 and float(row.norm()) > tol * scale:
            rows.append(row / row.norm())
    if not rows:
        return torch.zeros(0, dim)
    return torch.stack(rows).float()
