"""Decoupler and TrainingFreeDecoupler: the defining properties of the split (docs/design.md section 2-3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iad.decoupling import Decoupler, TrainingFreeDecoupler, orthonormal_rows

D = 512


def _planted(num_people=6, per_person=8, num_actions=3, action_scale=0.6, noise=0.02, seed=0):
    """Unit identity vectors + shared action directions (random coefficients) + small noise."""
    g = torch.Generator().manual_seed(seed)
    ids = F.normalize(torch.randn(num_people, D, generator=g), dim=-1)
    actions = orthonormal_rows(torch.randn(num_actions, D, generator=g))
    coef = torch.randn(num_people, per_person, num_actions, generator=g) * action_scale
    e = ids[:, None] + coef @ actions + noise * torch.randn(num_people, per_person, D, generator=g)
    groups = torch.arange(num_people).repeat_interleave(per_person)
    return F.normalize(e.reshape(-1, D), dim=-1), groups, ids, actions


def _subspace_alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between the row spaces (1 = same subspace)."""
    return float(torch.linalg.svdvals(orthonormal_rows(a) @ orthonormal_rows(b).T).pow(2).mean())


def test_projection_removes_the_basis_component_keeps_the_rest_and_the_norm():
    basis = orthonormal_rows(torch.randn(4, D))
    dec = TrainingFreeDecoupler(basis)
    e = torch.randn(5, D) * 3
    z = dec.identity(e)
    assert dec.action(z).abs().max() < 1e-4, "the action subspace was not projected out"
    torch.testing.assert_close(z.norm(dim=-1), e.norm(dim=-1))
    # Within the orthogonal complement only the scale changes: the direction is kept.
    rest = e - (e @ basis.T) @ basis
    torch.testing.assert_close(F.normalize(z, dim=-1), F.normalize(rest, dim=-1), atol=1e-5, rtol=1e-5)
    # Idempotent, and strength 0 is the identity map.
    torch.testing.assert_close(dec.identity(z), z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dec.identity(e, strength=0.0), e)


def test_strength_removes_the_action_component_gradually():
    basis = orthonormal_rows(torch.randn(2, D))
    dec = TrainingFreeDecoupler(basis)
    e = F.normalize(torch.randn(3, D) + 2 * basis[0], dim=-1)
    fractions = []
    for s in (0.0, 0.25, 0.5, 0.75, 1.0):
        z = dec.identity(e, strength=s)
        fractions.append(float((dec.action(z).norm(dim=-1) / z.norm(dim=-1)).mean()))
    assert all(a > b for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[-1] < 1e-5
    with pytest.raises(ValueError, match="between 0 and 1"):
        dec.identity(e, strength=1.5)


def test_estimated_basis_recovers_planted_action_directions_from_one_person_and_from_many():
    e, groups, _, actions = _planted(num_people=6, per_person=8)
    pooled = TrainingFreeDecoupler.estimate_basis(e, groups)
    assert pooled.shape[0] == 3
    assert _subspace_alignment(pooled, actions) > 0.95
    one_person = TrainingFreeDecoupler.estimate_basis(e[groups == 0])
    assert 1 <= one_person.shape[0] <= 3
    # The directions found from one person's 8 photos lie (mostly: noise is fitted too) inside the
    # true action subspace; pooling many people is what makes the estimate sharp.
    inside = (one_person @ actions.T).pow(2).sum(-1)
    assert inside.mean() > 0.8, inside
    assert (pooled @ actions.T).pow(2).sum(-1).mean() > inside.mean()
    torch.testing.assert_close(pooled @ pooled.T, torch.eye(3), atol=1e-5, rtol=0)


def test_isotropic_noise_yields_no_action_directions():
    g = torch.Generator().manual_seed(1)
    person = F.normalize(torch.randn(1, D, generator=g) + 0.02 * torch.randn(40, D, generator=g), dim=-1)
    assert TrainingFreeDecoupler.estimate_basis(person).shape[0] == 0


def test_single_reference_uses_the_given_basis_or_passes_through_and_says_so():
    e, groups, _, actions = _planted()
    single = e[:1]
    bare = TrainingFreeDecoupler.fit(single)
    assert bare.rank == 0
    assert any("single reference" in note and "used as is" in note for note in bare.notes)
    torch.testing.assert_close(bare.identity(single), single)
    with_prior = TrainingFreeDecoupler.fit(single, prior=actions)
    assert with_prior.rank == 3 and any("given basis" in note for note in with_prior.notes)
    assert with_prior.action(with_prior.identity(single)).abs().max() < 1e-4
    # Several references of the person add their own directions to the prior's.
    extended = TrainingFreeDecoupler.fit(e[groups == 0], prior=actions[:1])
    assert extended.rank >= 2
    torch.testing.assert_close(extended.basis[0], actions[0], atol=1e-5, rtol=0)


def test_fusion_in_the_decoupled_space_is_order_invariant_and_resists_an_outlier():
    e, groups, ids, actions = _planted(per_person=6)
    dec = TrainingFreeDecoupler(actions)
    refs = e[groups == 0]
    fused = dec.fuse(refs)
    torch.testing.assert_close(fused, dec.fuse(refs.flip(0)), atol=1e-5, rtol=1e-5)
    assert F.cosine_similarity(fused, ids[0], dim=0) > F.cosine_similarity(F.normalize(refs.mean(0), dim=0), ids[0], dim=0)
    with_outlier = torch.cat([refs, e[groups == 1][:1]])
    robust = dec.fuse(with_outlier)
    naive = F.normalize(dec.identity(with_outlier).mean(0), dim=0)
    assert F.cosine_similarity(robust, ids[0], dim=0) > F.cosine_similarity(naive, ids[0], dim=0)
    torch.testing.assert_close(dec.fuse(refs[:1]), dec.identity(refs[:1])[0], atol=1e-5, rtol=1e-5)


def test_orthonormal_rows_drops_dependent_rows_and_keeps_order():
    a = torch.randn(3, D)
    rows = orthonormal_rows(torch.cat([a, a[:1] + a[1:2], torch.zeros(1, D)]))
    assert rows.shape == (3, D)
    torch.testing.assert_close(rows[0], F.normalize(a[0], dim=0), atol=1e-5, rtol=0)


def test_untrained_decoupler_passes_identity_through_and_reconstructs_exactly():
    dec = Decoupler(D, act_dim=16, hidden=32)
    e = torch.randn(4, D)
    z_id, z_act = dec(e)
    torch.testing.assert_close(z_id, e, atol=1e-5, rtol=1e-5)
    assert z_act.shape == (4, 16)
    torch.testing.assert_close(dec.reconstruct(z_id, z_act), e, atol=1e-5, rtol=1e-5)


def test_trained_decoupler_keeps_the_norm_interpolates_with_strength_and_has_gradients():
    torch.manual_seed(0)
    dec = Decoupler(D, act_dim=8, hidden=32)
    dec.reset_parameters(zero_residual=False)
    e = F.normalize(torch.randn(6, D), dim=-1) * 2
    z_id = dec.identity(e)
    torch.testing.assert_close(z_id.norm(dim=-1), e.norm(dim=-1))
    torch.testing.assert_close(dec.identity(e, strength=0.0), e, atol=1e-5, rtol=1e-5)
    half = dec.identity(e, strength=0.5)
    assert (F.cosine_similarity(half, e) > F.cosine_similarity(z_id, e)).all()
    z_id, z_act = dec(e)
    (z_id.sum() + z_act.sum() + dec.reconstruct(z_id, z_act).sum()).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert dec.fuse(e).shape == (D,)
