"""iad.train on every supported ComfyUI: what changed upstream after 0.3.75 and how the trainer
meets it.

- ComfyUI v0.2x routes rope through comfy_kitchen's fused kernels, which have no backward unless
  ``comfy.model_management.in_training`` is set: the trainer sets it while gradients are recorded
  (the backward recomputation of gradient checkpointing included) and restores it afterwards.
- ComfyUI v0.2x loads models on a GPU through ``ModelPatcherDynamic`` (dynamic VRAM), whose
  ``patch_model`` refuses to load weights: the trainer asks for a plain, resident patcher. On this
  CPU-only machine ComfyUI never builds a dynamic patcher, so a stand-in with the same contract
  (``is_dynamic()`` and the refusal) takes ``CoreModelPatcher``'s place, as main.py does on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness import train_data
from harness.train_fixtures import _restore_threads, dataset  # noqa: F401  (fixtures)
from test_train_base import base_config


def _in_training():
    import comfy.model_management as mm

    return getattr(mm, "in_training", None)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
@pytest.mark.parametrize("mode", ["adapter", "base"])
def test_backward_through_comfyui_rope_gives_gradients_and_restores_the_flag(dataset, tmp_path, mode, checkpointing):
    from iad.train.config import load_config
    from iad.train.trainer import Trainer

    config = (train_data.train_config(dataset, tmp_path / "t", gradient_checkpointing=checkpointing) if mode == "adapter"
              else base_config(dataset, tmp_path / "t", gradient_checkpointing=checkpointing, trainable=["blocks.*"]))
    before = _in_training()
    trainer = Trainer(load_config(config))
    try:
        loss, _ = trainer.model(trainer._micro_batch(0), 0)
        assert _in_training() == before, "the training flag leaked out of the forward pass"
        loss.backward()   # on v0.28.2 without the flag: "no autograd formula" for comfy_kitchen's rope
        grads = [p.grad for p in trainer.module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        with torch.no_grad():   # evaluation keeps ComfyUI's inference kernels
            trainer.model(trainer._micro_batch(1), 0)
        assert _in_training() == before
    finally:
        trainer.close()


@pytest.mark.parametrize("mode", ["adapter", "base"])
def test_trainer_gets_resident_weights_where_comfyui_loads_models_dynamically(dataset, tmp_path, monkeypatch, mode):
    import comfy.model_patcher as mp

    from iad.train import run

    made = []

    class DynamicStandIn(mp.ModelPatcher):
        """ModelPatcherDynamic's contract: weights are not loaded by patch_model."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def is_dynamic(self):
            return True

        def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
            assert not load_weights, "dynamic VRAM: patch_model cannot load weights"
            return super().patch_model(device_to, lowvram_model_memory, load_weights, force_patch_weights)

        def get_non_dynamic_delegate(self):
            return mp.ModelPatcher(self.model, self.load_device, self.offload_device)

    # What ComfyUI's main.py does on a GPU with dynamic VRAM on (v0.2x); 0.3.75's loader ignores it.
    monkeypatch.setattr(mp, "CoreModelPatcher", DynamicStandIn, raising=False)
    config = (train_data.train_config(dataset, tmp_path / "t", steps=3, resume=False) if mode == "adapter"
              else base_config(dataset, tmp_path / "t", steps=3, trainable=["blocks.*"]))
    result = run(config)
    assert result.history[-1]["step"] == 3 and torch.isfinite(torch.tensor(result.history[-1]["total"]))
    assert result.final_checkpoint is not None and result.final_checkpoint.exists()


class _SavesItsOutput(torch.autograd.Function):
    """Attention whose backward reads its own output, as the fused GPU kernels (flash, efficient,
    cuDNN SDPA) do; the CPU's math kernel saves no output, so it cannot show an in-place write."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out = ctx.saved_tensors   # raises if ``out`` was modified in place
        with torch.enable_grad():
            q_, k_, v_ = (t.detach().requires_grad_() for t in (q, k, v))
            again = torch.softmax(q_ @ k_.transpose(-1, -2), -1) @ v_
            return torch.autograd.grad(again, (q_, k_, v_), grad)


def test_identity_attention_keeps_the_text_attention_output_intact_while_training():
    """Found on an H200: adding the identity term in place into the text attention's output broke
    the backward of fused kernels ("modified by an inplace operation"). While autograd records,
    the term is added out of place; at inference it stays in place (no extra memory)."""
    from iad.patching import add_identity_attention

    def attention(q, k, v, heads):
        return _SavesItsOutput.apply(q, k, v)

    g = torch.Generator().manual_seed(0)
    q, k_txt, v_txt, k_id, v_id = (torch.randn(2, 5, 8, generator=g, requires_grad=True) for _ in range(5))
    for rows in (None, [0]):
        out = attention(q, k_txt, v_txt, 1)
        total = add_identity_attention(out, q, k_id, v_id, 1, 0.5, rows, attention)
        total.sum().backward()   # raised before the fix
        assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k_id, v_id))
    with torch.no_grad():   # inference: in place, the same tensor comes back
        out = attention(q, k_txt, v_txt, 1)
        assert add_identity_attention(out, q, k_id, v_id, 1, 0.5, None, attention) is out


def test_batch_size_one_trains_without_nan(tmp_path):
    """One clip per step (what a large model on one GPU runs): every term stays finite."""
    from iad.train import run

    data = train_data.synthetic_dataset(tmp_path / "data", [16, 2, 8, 8])   # where it went NaN before the fix
    result = run(train_data.train_config(data, tmp_path / "b1", batch_size=1, steps=30, log_every=1,
                                         optimizer={"lr": 1e-4}))
    assert all(math.isfinite(v) for entry in result.history for k, v in entry.items() if k != "step")
    assert result.evals[-1]["total"] < result.evals[0]["total"]
