"""iad.train, adapter mode with ``base_trainable``: the adapter and chosen base parameters train
jointly (what most published identity methods do), each at its own learning rate; the base's change
is saved as a ComfyUI LoRA-format delta that the native *LoraLoaderModelOnly* applies exactly, and
everything the globs leave out stays bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from harness import tiny_models as tiny
from harness import train_data
from harness.train_fixtures import _restore_threads, dataset  # noqa: F401  (fixtures)

CROSS_ATTN = ["blocks.*.cross_attn.*"]


def joint_config(data, output, **overrides) -> dict:
    return train_data.train_config(data, output, steps=6, resume=False, save_dtype="float32",
                                   base_trainable=CROSS_ATTN, base_frozen=["*.norm_k.*"],
                                   optimizer={"lr": 3e-3, "base_lr": 1e-3}, **overrides)


@pytest.fixture(scope="module")
def joint(dataset, tmp_path_factory):
    from iad.train import load_config
    from iad.train.trainer import Trainer

    out = tmp_path_factory.mktemp("joint")
    trainer = Trainer(load_config(joint_config(dataset, out)))
    try:
        groups = [(len(g["params"]), g["lr_scale"]) for g in trainer.optimizer.param_groups]
        result = trainer.train()
        trained = {n: p.detach().clone() for n, p in trainer.patcher.model.diffusion_model.named_parameters()}
    finally:
        trainer.close()
    return out, result, trained, groups


def test_the_chosen_base_parameters_train_at_their_own_rate_and_the_rest_stays(joint):
    out, result, trained, groups = joint
    original = {k: v.float() for k, v in load_file(str(tiny.ensure(tiny.WAN21_T2V))).items()}
    # two groups: the adapter's at lr, the base's at base_lr / lr of it through the schedule
    assert len(groups) == 2 and groups[1][1] == pytest.approx(1e-3 / 3e-3)
    chosen = [k for k in original if ".cross_attn." in k and ".norm_k." not in k]
    assert chosen and all(not torch.equal(trained[k], original[k]) for k in chosen if k.endswith(".weight"))
    assert all(torch.equal(trained[k], original[k]) for k in original if k not in chosen)    # frozen: bit for bit
    assert (out / "iad-tiny-trained.safetensors").is_file()


def test_the_base_delta_is_a_lora_file_that_loraloadermodelonly_applies_exactly(joint, comfy):
    """Load Diffusion Model + LoraLoaderModelOnly(delta, strength 1) = the jointly trained base, on a
    ModelPatcher clone (the loaded base itself stays as it was)."""
    import comfy.model_management
    import comfy.sd
    import comfy.utils

    out, _, trained, _ = joint
    delta_path = out / "iad-tiny-trained-base-delta.safetensors"
    delta = load_file(str(delta_path))
    assert delta and all(k.startswith("diffusion_model.") and k.endswith((".diff", ".diff_b")) for k in delta)
    assert not any(".norm_k." in k for k in delta) and all(".cross_attn." in k for k in delta)
    with safe_open(str(delta_path), framework="pt") as f:
        assert "base_trainable" in f.metadata()["iad_train"]
    base = comfy.sd.load_diffusion_model(str(tiny.ensure(tiny.WAN21_T2V)), model_options={"dtype": torch.float32})
    before = {k: v.clone() for k, v in base.model.diffusion_model.state_dict().items()}
    patched, _ = comfy.sd.load_lora_for_models(base, None, comfy.utils.load_torch_file(str(delta_path)), 1.0, 0.0)
    assert len(patched.patches) == len(delta)                        # every entry became a patch
    comfy.model_management.load_models_gpu([patched], force_full_load=True)
    try:
        got = patched.model.diffusion_model.state_dict()
        worst = max(float((got[k].float() - trained[k]).abs().max()) for k in trained)
    finally:
        patched.unpatch_model()
    assert worst < 1e-6
    after = base.model.diffusion_model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)      # the base itself is unchanged


def test_joint_settings_are_validated(dataset, tmp_path):
    from iad.train import ConfigError, run

    cases = [
        ({"base_trainable": ["nothing.*"]}, r"base_trainable \['nothing.\*'\] matches none"),
        ({"base_trainable": CROSS_ATTN, "base_frozen": ["*"]}, r"minus \['\*'\] matches none"),
        ({"base_frozen": ["*.norm_k.*"]}, "base_frozen removes parameters from base_trainable, which is empty"),
        ({"optimizer": {"lr": 1e-3, "base_lr": 1e-4}}, "optimizer.base_lr is the learning rate of base_trainable"),
        ({"base_trainable": CROSS_ATTN, "optimizer": {"lr": 1e-3, "base_lr": float("nan")}}, "base_lr must be a finite number > 0"),
        ({"base_trainable": CROSS_ATTN, "optimizer": {"lr": 1e-3, "base_lr": float("inf")}}, "base_lr must be a finite number > 0"),
        ({"base_trainable": CROSS_ATTN, "optimizer": {"lr": 1e-3, "base_lr": -1e-4}}, "base_lr must be a finite number > 0"),
        ({"base_trainable": CROSS_ATTN, "precision": "bf16"}, "base_trainable needs precision 'fp32'"),
        ({"base_trainable": "blocks.*"}, "base_trainable must be a list of parameter-name patterns"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            run(train_data.train_config(dataset, tmp_path / "bad", steps=1, **overrides))
    base_mode = train_data.train_config(dataset, tmp_path / "bad2", mode="base", base_trainable=CROSS_ATTN)
    base_mode.pop("adapter")
    with pytest.raises(ConfigError, match="with mode 'base' use trainable"):
        run(base_mode)
    # the old message points at the new keys
    with pytest.raises(ConfigError, match="use base_trainable"):
        run(train_data.train_config(dataset, tmp_path / "bad3", trainable=["blocks.*"]))
