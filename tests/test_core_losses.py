"""Each loss behaves as defined (docs/design.md section 5): ~0 on constructed ideal inputs, larger when the
property is broken, finite gradients to the trainable side, invariant where it should be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iad.decoupling import Decoupler
from iad.losses import (
    ActionTextProjector,
    cross_correlation_penalty,
    decoupler_training_loss,
    identity_consistency_reward,
    identity_decoupling_loss,
    multi_positive_info_nce,
    prompt_following_loss,
    reconstruction_loss,
    sample_frame_indices,
    semantic_consistency_reward,
    text_alignment_loss,
)

G = torch.Generator().manual_seed(0)


def _orthonormal(n: int, d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, n, generator=G))
    return q.T.contiguous()


# -- Identity Decoupling Loss --------------------------------------------------------------------

def test_info_nce_is_near_zero_when_people_are_separated_and_large_when_mixed_up():
    people = torch.arange(4).repeat_interleave(3)          # 4 people x 3 frames
    ids = _orthonormal(4, 64)
    ideal = ids[people]                                    # same person -> identical z_id
    assert multi_positive_info_nce(ideal, people, 0.1) < 1e-3
    swapped = ideal.clone()
    swapped[[0, 3]] = swapped[[3, 0]]                      # two frames given the wrong identity
    collapsed = torch.ones_like(ideal)                     # z_id carries no identity at all
    assert multi_positive_info_nce(swapped, people, 0.1) > 1.0
    assert multi_positive_info_nce(collapsed, people, 0.1) == pytest.approx(torch.log(torch.tensor(11 / 2)).item(), rel=1e-4)
    # Scale and batch order do not matter.
    noisy = ideal + 0.3 * torch.randn(ideal.shape, generator=G)
    base = multi_positive_info_nce(noisy, people)
    perm = torch.randperm(12, generator=G)
    torch.testing.assert_close(multi_positive_info_nce(noisy[perm] * 7.0, people[perm]), base)
    with pytest.raises(ValueError, match="two samples with the same label"):
        multi_positive_info_nce(ideal[:4:3], people[:4:3])


def test_cross_correlation_is_zero_for_uncorrelated_features_and_one_for_copies():
    raw = torch.randn(32, 6, generator=G)
    basis, _ = torch.linalg.qr(raw - raw.mean(0))          # 6 centred, orthogonal columns over a batch of 32
    a, b = basis[:, :3], basis[:, 3:]
    assert cross_correlation_penalty(a, b) < 1e-10
    copy = torch.cat([a[:, :1]] * 3, 1)
    assert cross_correlation_penalty(copy, a[:, :1]) == pytest.approx(1.0, abs=1e-5)
    leaked = torch.cat([b[:, :1], a[:, 1:]], 1)            # one z_id feature copies a z_act feature
    assert cross_correlation_penalty(leaked, b) > cross_correlation_penalty(a, b) + 0.1
    # Shift / scale / sign invariance.
    torch.testing.assert_close(cross_correlation_penalty(-3 * leaked + 5, 0.1 * b), cross_correlation_penalty(leaked, b))


def test_reconstruction_loss_is_zero_only_for_exact_reconstruction():
    e = torch.randn(5, 512, generator=G)
    assert reconstruction_loss(e, e) < 1e-6
    assert reconstruction_loss(2 * e, e) > 0.5             # right direction, wrong norm
    assert reconstruction_loss(e + 0.5 * torch.randn(5, 512, generator=G), e) > 0.05


def test_identity_decoupling_loss_combines_the_three_terms_with_gradients_to_the_decoupler():
    torch.manual_seed(0)
    dec = Decoupler(64, act_dim=8, hidden=32)
    dec.reset_parameters(zero_residual=False)
    e = torch.randn(12, 64)
    people = torch.arange(4).repeat_interleave(3)
    z_id, z_act = dec(e)
    terms = identity_decoupling_loss(z_id, z_act, people, e, dec.reconstruct(z_id, z_act), w_decorrelation=2.0, w_reconstruction=0.5)
    p = terms.parts
    torch.testing.assert_close(terms.total, p["id_nce"] + 2.0 * p["decorrelation"] + 0.5 * p["reconstruction"])
    terms.total.backward()
    for name, param in dec.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for param in dec.id_head.parameters())
    assert any(param.grad.abs().sum() > 0 for param in dec.act_head.parameters())
    assert any(param.grad.abs().sum() > 0 for param in dec.recon_head.parameters())


# -- Text Alignment Loss ---------------------------------------------------------------------------

def test_text_alignment_is_minimal_for_matched_actions_and_breaks_when_mismatched():
    actions = torch.arange(4).repeat(3)                    # 12 frames, 4 action texts
    texts = _orthonormal(4, 16)
    matched = texts[actions]
    assert text_alignment_loss(matched, matched, actions, 0.05) < 1e-3
    shuffled = texts[(actions + 1) % 4]
    assert text_alignment_loss(shuffled, matched, actions, 0.05) > 5.0
    # Repeated captions are positives, not negatives: without action_ids the same ideal input is penalised.
    assert text_alignment_loss(matched, matched, None, 0.05) > 1.0
    noisy = matched + 0.3 * torch.randn(matched.shape, generator=G)
    perm = torch.randperm(12, generator=G)
    torch.testing.assert_close(text_alignment_loss(4 * noisy[perm], matched[perm], actions[perm]),
                               text_alignment_loss(noisy, matched, actions))


def test_text_alignment_gradients_reach_the_decoupler_and_the_projector():
    torch.manual_seed(1)
    dec = Decoupler(64, act_dim=8, hidden=32)
    proj = ActionTextProjector(8, 16, 32)
    e = torch.randn(8, 64)
    text = torch.randn(8, 16)
    terms = decoupler_training_loss(dec, proj, e, torch.arange(4).repeat_interleave(2), text, torch.arange(8))
    terms.total.backward()
    assert set(terms.parts) == {"id_nce", "decorrelation", "reconstruction", "text_alignment"}
    for module in (dec.act_head, proj.act, proj.text):
        for name, param in module.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


# -- Prompt-following term ---------------------------------------------------------------------------

def test_prompt_following_is_zero_when_identity_shifts_both_branches_alike():
    x = torch.randn(2, 16, 4, 8, 8, generator=G)
    text_base, null_base = x + 0.5, x - 0.2
    face = torch.randn(x.shape, generator=G)               # the identity's own effect, present in both branches
    assert prompt_following_loss(text_base + face, null_base + face, text_base, null_base) < 1e-10
    # The identity overriding the prompt (its text effect shrinks) is penalised, proportionally.
    text_id = text_base + face
    weakened = null_base + face + 0.5 * (text_base - null_base)
    assert prompt_following_loss(weakened, null_base + face, text_base, null_base) == pytest.approx(0.25, rel=1e-4)
    # Scale-free: the same relative deviation gives the same value at any prediction scale.
    assert prompt_following_loss(10 * weakened, 10 * (null_base + face), 10 * text_base, 10 * null_base) == pytest.approx(0.25, rel=1e-4)
    # Gradients reach the identity branch only (the base model is a detached target).
    text_id = text_id.clone().requires_grad_(True)
    base = text_base.clone().requires_grad_(True)
    prompt_following_loss(text_id * 1.1, null_base + face, base, null_base).backward()
    assert torch.isfinite(text_id.grad).all() and text_id.grad.abs().sum() > 0
    assert base.grad is None


# -- PersonalVideo rewards ------------------------------------------------------------------------------

def test_identity_consistency_reward_is_one_minus_cosine_to_the_reference():
    ref = F.normalize(torch.randn(3, 512, generator=G) * 0.1 + torch.randn(512, generator=G), dim=-1)
    target = F.normalize(ref.mean(0), dim=0)
    same = target.repeat(5, 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0]])
    assert identity_consistency_reward(ref, same) < 1e-6                        # scale-invariant ideal
    other = torch.randn(5, 512, generator=G)
    mixed = torch.cat([same[:3], other[:2]])
    expected = (1 - F.cosine_similarity(mixed, target[None], dim=-1)).mean()
    torch.testing.assert_close(identity_consistency_reward(ref, mixed), expected)
    assert identity_consistency_reward(ref, mixed) > identity_consistency_reward(ref, same) + 0.3
    # Frames without a face are ignored; order does not matter.
    valid = torch.tensor([True, True, True, False, False])
    assert identity_consistency_reward(ref, mixed, valid) < 1e-6
    torch.testing.assert_close(identity_consistency_reward(ref, mixed.flip(0)), identity_consistency_reward(ref, mixed))
    frames = other.clone().requires_grad_(True)
    refs = ref.clone().requires_grad_(True)
    identity_consistency_reward(refs, frames).backward()
    assert torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0 and refs.grad is None
    none = identity_consistency_reward(ref, frames, torch.zeros(5, dtype=torch.bool))
    assert none == 0 and none.requires_grad


def test_sample_frame_indices_cover_the_clip():
    idx = sample_frame_indices(81, 4, torch.Generator().manual_seed(3))
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 4
    assert all(20 * i <= v < 20 * (i + 1) + 1 for i, v in enumerate(idx.tolist()))
    assert sample_frame_indices(3, 8).numel() == 3


def test_semantic_consistency_reward_is_a_kl_between_softmaxed_frame_scores():
    frozen = torch.randn(2, 6, generator=G)
    assert semantic_consistency_reward(frozen, frozen.clone()) < 1e-7
    assert semantic_consistency_reward(frozen, frozen + torch.tensor([[3.0], [-1.0]])) < 1e-6   # per-sample shift
    drifted = frozen.clone()
    drifted[:, 0] += 3.0
    kl = semantic_consistency_reward(frozen, drifted)
    p, q = F.softmax(frozen, -1), F.softmax(drifted, -1)
    torch.testing.assert_close(kl, (p * (p / q).log()).sum(-1).mean())
    assert kl > 0.1
    assert semantic_consistency_reward(frozen, frozen + 0.5 * torch.randn(2, 6, generator=G)) < kl
    tuned = drifted.clone().requires_grad_(True)
    base = frozen.clone().requires_grad_(True)
    semantic_consistency_reward(base, tuned).backward()
    assert torch.isfinite(tuned.grad).all() and tuned.grad.abs().sum() > 0 and base.grad is None


def test_decorrelation_has_finite_gradients_when_a_feature_is_constant_over_the_batch():
    """batch_size 1 gives the frames of one clip; a feature can then be exactly constant. The
    square root of its zero norm had an infinite gradient and the trainer went NaN (found with a
    Wan 1.3B-shaped model at batch 1 on an H200, then on the CPU)."""
    from iad.losses import cross_correlation_penalty

    a = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, 3)
    b[:, 1] = 0.7                                  # constant over the batch
    with torch.no_grad():
        a[:, 2] = -1.5
    value = cross_correlation_penalty(a, b)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(a.grad).all()
