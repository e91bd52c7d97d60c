"""Decoupling on controlled data (issue 4, last section; docs/design.md section 6).

Embeddings are built with a known identity component and a known action component:
``e = normalize(id_person + alpha * a_action + noise)``, with shared action directions strong
enough that, in the raw embeddings, two people making the same face look about as alike as one
person making two different faces. We show, on people never seen while fitting/training:

(a) the training-free projection removes the action component while keeping identities apart;
(b) a Decoupler trained with the Identity Decoupling and Text Alignment losses recovers both:
    z_id separates people regardless of action, z_act tells which action text was described.

Run with ``pytest -s`` to see the numbers (they are also in docs/design.md section 6).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from iad.decoupling import Decoupler, TrainingFreeDecoupler, orthonormal_rows
from iad.losses import ActionTextProjector, cross_correlation_penalty, decoupler_training_loss

D, NUM_ACTIONS, TEXT_DIM = 512, 6, 32
ACTION_RANK = NUM_ACTIONS - 1


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one thread is ~50x faster than several competing on a shared CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class World:
    """Identity vectors, shared action directions and action-text embeddings, all seeded."""

    def __init__(self, seed: int = 0) -> None:
        self.g = torch.Generator().manual_seed(seed)
        # Actions are deviations from the average face: a component shared by every frame of everyone
        # cannot be told apart from identity, so the planted action subspace has NUM_ACTIONS - 1 dimensions.
        raw = torch.randn(NUM_ACTIONS, D, generator=self.g)
        self.actions = F.normalize(raw - raw.mean(0), dim=-1)
        self.action_basis = orthonormal_rows(self.actions)
        assert self.action_basis.shape[0] == ACTION_RANK
        self.texts = torch.randn(NUM_ACTIONS, TEXT_DIM, generator=self.g)

    def people(self, n: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, D, generator=self.g), dim=-1)

    def frames(self, ids: torch.Tensor, per_person: int, noise: float = 0.015):
        """Each frame shows a random action (so people differ in their average action too)."""
        n = ids.shape[0]
        person = torch.arange(n).repeat_interleave(per_person)
        action = torch.randint(0, NUM_ACTIONS, (person.shape[0],), generator=self.g)
        alpha = 0.8 + 0.4 * torch.rand(person.shape[0], 1, generator=self.g)
        e = ids[person] + alpha * self.actions[action] + noise * torch.randn(person.shape[0], D, generator=self.g)
        text = self.texts[action] + 0.1 * torch.randn(person.shape[0], TEXT_DIM, generator=self.g)
        return F.normalize(e, dim=-1), person, action, text


def identity_report(z: torch.Tensor, person: torch.Tensor, action: torch.Tensor, basis: torch.Tensor) -> dict[str, float]:
    u = F.normalize(z.float(), dim=-1)
    cos = u @ u.T
    same_p, same_a = person[:, None] == person[None], action[:, None] == action[None]
    off = ~torch.eye(len(u), dtype=torch.bool)
    same_person_other_action = cos[same_p & ~same_a & off].mean()
    other_person_same_action = cos[~same_p & same_a].mean()
    # Identification: gallery = each person's first frame; probes = their frames with another action.
    gallery_idx = torch.stack([torch.nonzero(person == p)[0, 0] for p in person.unique()])
    probes = torch.nonzero(action != action[gallery_idx][person]).reshape(-1)
    predicted = (u[probes] @ u[gallery_idx].T).argmax(1)
    accuracy = (predicted == person[probes]).float().mean()
    action_energy = ((u @ basis.T).pow(2).sum(1)).mean()
    return {
        "same_person_other_action_cos": float(same_person_other_action),
        "other_person_same_action_cos": float(other_person_same_action),
        "margin": float(same_person_other_action - other_person_same_action),
        "identification_acc": float(accuracy),
        "action_energy": float(action_energy),
    }


def _line(name: str, r: dict[str, float]) -> str:
    return (f"  {name:<34} margin {r['margin']:+.3f} (same person/other action {r['same_person_other_action_cos']:.3f}, "
            f"other person/same action {r['other_person_same_action_cos']:.3f})  id-acc {r['identification_acc']:.3f}  "
            f"action energy {r['action_energy']:.3f}")


def test_training_free_projection_removes_action_and_keeps_identities_apart():
    world = World(seed=0)
    fit_e, fit_person, _, _ = world.frames(world.people(30), per_person=6)   # anyone's photos: shared directions
    test_e, person, action, _ = world.frames(world.people(12), per_person=6)

    decoupler = TrainingFreeDecoupler.fit(fit_e, fit_person, max_rank=12)
    alignment = float(torch.linalg.svdvals(decoupler.basis @ world.action_basis.T).pow(2).sum() / ACTION_RANK)
    raw = identity_report(test_e, person, action, world.action_basis)
    half = identity_report(decoupler.identity(test_e, strength=0.5), person, action, world.action_basis)
    full = identity_report(decoupler.identity(test_e, strength=1.0), person, action, world.action_basis)
    # One person's own six photos are enough to find most of the action subspace.
    own = TrainingFreeDecoupler.fit(test_e[person == 0])
    own_alignment = float(torch.linalg.svdvals(own.basis @ world.action_basis.T).pow(2).sum() / max(own.rank, 1))

    print("\n(a) training-free projection, 12 unseen people x 6 actions")
    print(f"  basis from 30 other people: rank {decoupler.rank}, captures {alignment:.3f} of the true action subspace")
    print(f"  basis from one person's 6 photos: rank {own.rank}, {own_alignment:.3f} of it inside the action subspace")
    print(_line("raw embeddings", raw))
    print(_line("projected, strength 0.5", half))
    print(_line("projected, strength 1.0", full))

    assert decoupler.rank == ACTION_RANK and alignment > 0.98
    assert own_alignment > 0.8
    assert raw["margin"] < 0.1, "the controlled data should confuse raw identity comparison"
    assert full["action_energy"] < 0.01 < raw["action_energy"] / 10
    assert full["margin"] > 0.8 and full["identification_acc"] == 1.0
    assert raw["margin"] < half["margin"] < full["margin"]
    assert full["identification_acc"] >= raw["identification_acc"]


def test_decoupler_trained_with_the_two_losses_recovers_identity_and_action():
    world = World(seed=1)
    train_ids = world.people(60)
    test_e, person, action, _ = world.frames(world.people(12), per_person=6)

    torch.manual_seed(0)
    decoupler = Decoupler(D, act_dim=16, hidden=128)
    projector = ActionTextProjector(16, TEXT_DIM, 32)
    optimizer = torch.optim.Adam([*decoupler.parameters(), *projector.parameters()], lr=1e-3)
    start = time.perf_counter()
    steps = 300
    for step in range(steps):
        chosen = torch.randperm(train_ids.shape[0], generator=world.g)[:16]
        e, p, a, text = world.frames(train_ids[chosen], per_person=4)
        terms = decoupler_training_loss(decoupler, projector, e, p, text, a, temperature=0.1)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        if step == 0:
            first = terms.item_dict()
    seconds = time.perf_counter() - start
    last = terms.item_dict()

    decoupler.eval()
    with torch.no_grad():
        z_id, z_act = decoupler(test_e)
        raw = identity_report(test_e, person, action, world.action_basis)
        trained = identity_report(z_id, person, action, world.action_basis)
        act_features = F.normalize(projector.act(z_act), dim=-1)
        text_features = F.normalize(projector.text(world.texts), dim=-1)
        action_acc = float(((act_features @ text_features.T).argmax(1) == action).float().mean())
        recon_cos = float(F.cosine_similarity(decoupler.reconstruct(z_id, z_act), test_e, dim=-1).mean())
        decorrelation = float(cross_correlation_penalty(z_id, z_act))

    print(f"\n(b) Decoupler trained with Identity Decoupling + Text Alignment losses ({steps} steps, {seconds:.1f} s on CPU)")
    print("  loss first step: " + ", ".join(f"{k} {v:.3f}" for k, v in first.items()))
    print("  loss last step:  " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()))
    print("  12 unseen people x 6 actions:")
    print(_line("raw embeddings", raw))
    print(_line("z_id (trained decoupler)", trained))
    print(f"  z_act -> action text retrieval accuracy {action_acc:.3f} (chance {1 / NUM_ACTIONS:.3f})")
    print(f"  reconstruction cos(g(z_id, z_act), e) {recon_cos:.4f}; corr^2(z_id, z_act) {decorrelation:.4f}")

    assert last["total"] < first["total"]
    assert raw["margin"] < 0.1
    assert trained["margin"] > 0.5 and trained["identification_acc"] >= 0.95
    assert trained["action_energy"] < raw["action_energy"] / 3
    assert action_acc >= 0.9
    assert recon_cos > 0.95
    assert seconds < 60
