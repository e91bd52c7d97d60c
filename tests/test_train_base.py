"""iad.train with ``mode: base``: the Wan T2V model itself trains (pre-training or fine-tuning, no
identity) on a prepared dataset -- the loss falls, the saved file is a diffusion-model file in the
source's own layout that ComfyUI loads as the same model, ``trainable`` freezes everything it does
not select, resume is exact, and settings that only make sense for an adapter are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from harness import tiny_models as tiny
from harness import train_data
from harness.train_fixtures import _restore_threads, dataset  # noqa: F401  (fixtures)


def base_config(data: Path, output: Path, **overrides) -> dict:
    config = train_data.train_config(data, output, mode="base", name="tiny-base", steps=40, batch_size=4, log_every=10,
                                     resume=False, save_dtype="float32", optimizer={"lr": 1e-3})
    config.pop("adapter")
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def trained_base(dataset, tmp_path_factory):
    from iad.train import run

    out = tmp_path_factory.mktemp("train-base")
    return out, run(base_config(dataset, out, steps=60, checkpoint_every=30, caption_dropout=0.2))


def test_base_mode_trains_the_model_itself(trained_base):
    out, result = trained_base
    first, last = result.evals[0], result.evals[-1]
    print(f"\nbase mode: eval diffusion loss {first['diffusion']:.4f} -> {last['diffusion']:.4f} after {last['step']} steps")
    assert last["step"] == 60
    assert last["diffusion"] < 0.6 * first["diffusion"]
    assert (out / "checkpoints" / "tiny-base-step000030.safetensors").is_file()
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"eval"' not in x]
    assert [r["step"] for r in logged] == [10, 20, 30, 40, 50, 60] and all("diffusion" in r for r in logged)


def test_saved_base_is_a_diffusion_model_file_in_the_sources_layout(trained_base, comfy):
    _, result = trained_base
    source = tiny.ensure(tiny.WAN21_T2V)
    original, trained = load_file(str(source)), load_file(str(result.final_checkpoint))
    assert trained.keys() == original.keys()
    assert all(trained[k].shape == original[k].shape and trained[k].dtype == torch.float32 for k in original)
    changed = [k for k in original if not torch.equal(trained[k].to(original[k].dtype), original[k])]
    assert len(changed) > 0.9 * len(original)          # every layer trained ("*"), a few may stay (e.g. zero grads)
    with safe_open(str(source), framework="pt") as f:
        source_meta = f.metadata() or {}
    with safe_open(str(result.final_checkpoint), framework="pt") as f:
        meta = f.metadata()
    assert all(meta[k] == v for k, v in source_meta.items())        # the source's metadata is kept
    info = json.loads(meta["iad_train"])
    assert info["trainer"] == "iad.train" and info["trained_steps"] == 60 and info["base_model"] == source.name

    import comfy.sd

    loaded = comfy.sd.load_diffusion_model(str(result.final_checkpoint))
    reference = comfy.sd.load_diffusion_model(str(source))
    assert type(loaded.model).__name__ == type(reference.model).__name__
    assert type(loaded.model.model_config).__name__ == type(reference.model.model_config).__name__
    key = next(k for k in trained if k.endswith("blocks.0.cross_attn.q.weight"))
    weight = loaded.model.diffusion_model.blocks[0].cross_attn.q.weight
    assert torch.equal(weight.float(), trained[key])


def test_trainable_patterns_freeze_the_rest_bit_for_bit(dataset, tmp_path):
    from iad.train import run

    result = run(base_config(dataset, tmp_path, steps=5, trainable=["blocks.*.cross_attn.*"]))
    original, trained = load_file(str(tiny.ensure(tiny.WAN21_T2V))), load_file(str(result.final_checkpoint))
    selected = [k for k in original if ".cross_attn." in k]
    assert selected and all(not torch.equal(trained[k], original[k].float()) for k in selected if k.endswith("weight"))
    assert all(torch.equal(trained[k], original[k].float()) for k in original if k not in selected)


def test_base_mode_resume_continues_exactly(dataset, tmp_path):
    from iad.train import run

    whole = run(base_config(dataset, tmp_path / "whole", steps=12, checkpoint_every=6))
    run(base_config(dataset, tmp_path / "split", steps=6, checkpoint_every=6))
    resumed = run(base_config(dataset, tmp_path / "split", steps=12, checkpoint_every=6, resume="auto"))
    assert resumed.resumed_from == 6
    a, b = load_file(str(whole.final_checkpoint)), load_file(str(resumed.final_checkpoint))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_base_mode_gradient_checkpointing_is_exact_and_bf16_trains(dataset, tmp_path):
    """Checkpointed Wan blocks give the same training (the block's own weights are recomputed, not
    the last block's); bf16 autocasts the forward over fp32 master weights."""
    from iad.train import run

    plain = load_file(str(run(base_config(dataset, tmp_path / "plain", steps=3)).final_checkpoint))
    checkpointed = load_file(str(run(base_config(dataset, tmp_path / "ckpt", steps=3,
                                                 gradient_checkpointing=True)).final_checkpoint))
    assert max(float((plain[k] - checkpointed[k]).abs().max()) for k in plain) < 1e-6
    result = run(base_config(dataset, tmp_path / "bf16", steps=20, precision="bf16"))
    first, last = result.evals[0]["diffusion"], result.evals[-1]["diffusion"]
    assert torch.isfinite(torch.tensor(last)) and last < first
    assert all(v.dtype == torch.float32 for v in load_file(str(result.final_checkpoint)).values())


def test_adapter_only_settings_are_refused_in_base_mode(dataset, tmp_path):
    from iad.train import ConfigError, run

    cases = [
        ({"losses": {"scr": {"weight": 0.1}}}, "losses.scr trains an identity adapter"),
        ({"init_from": str(tmp_path / "x.safetensors")}, "init_from loads an IaD adapter"),
        ({"timesteps": {"late_steps_only": True}}, "late_steps_only is an identity-injection setting"),
        ({"mode": "lora"}, "mode must be 'adapter'"),
        ({"trainable": ["no_such_layer.*"]}, r"trainable \['no_such_layer.\*'\] matches none"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            run(base_config(dataset, tmp_path / "bad", steps=1, **overrides))
    adapter_mode = train_data.train_config(dataset, tmp_path / "bad2", trainable=["blocks.*"])
    with pytest.raises(ConfigError, match="trainable selects the parameters of the model itself and needs mode 'base' or 'vae'"):
        run(adapter_mode)


# -- mode 'vae' --------------------------------------------------------------------------------------

def vae_config(data: Path, output: Path, **overrides) -> dict:
    config = base_config(data, output, mode="vae", name="tiny-vae", base_model=str(tiny.ensure(tiny.WAN21_VAE)),
                         optimizer={"lr": 2e-3, "weight_decay": 0.0})
    config.update(overrides)
    return config


def test_prepare_stores_the_frames_the_latents_encode(dataset, comfy):
    """store_pixels keeps the target window's frames; the stored latents are the VAE's encoding of them."""
    from iad.prepare.encoders import ComfyVAE
    from iad.train.data import PreparedDataset

    data = PreparedDataset(dataset)
    pixels, latents = data.tensor(0, "target.pixels"), data.tensor(0, "latents")
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (5, 64, 64, 3)
    encoded = ComfyVAE(str(tiny.ensure(tiny.WAN21_VAE))).encode(pixels.numpy())
    assert torch.allclose(encoded, latents, atol=1e-4)


def test_vae_mode_trains_the_wan_vae_and_saves_a_comfyui_vae_file(dataset, tmp_path, comfy):
    from iad.prepare.encoders import ComfyVAE
    from iad.train import run

    # a differently seeded VAE learns the latent space of the one that prepared the data (the
    # world's VAE learns its codec's space this way): both halves start far off
    student = tiny.ensure(tiny.WanVAESpec("iad-tiny-wan2.1-vae-student.safetensors", seed=5))
    result = run(vae_config(dataset, tmp_path, base_model=str(student), steps=30, checkpoint_every=15))
    first, last = result.evals[0], result.evals[-1]
    print(f"\nvae mode: decode mse {first['vae_decode']:.4f} -> {last['vae_decode']:.4f}, "
          f"encode mse {first['vae_encode']:.4f} -> {last['vae_encode']:.4f}")
    assert last["vae_decode"] < 0.7 * first["vae_decode"] and last["vae_encode"] < 0.7 * first["vae_encode"]
    source = student
    original, trained = load_file(str(source)), load_file(str(result.final_checkpoint))
    assert trained.keys() == original.keys()
    assert any(not torch.equal(trained[k], original[k].float()) for k in original)
    assert (tmp_path / "checkpoints" / "tiny-vae-step000015.safetensors").is_file()
    with safe_open(str(result.final_checkpoint), framework="pt") as f:
        assert json.loads(f.metadata()["iad_train"])["trainer"] == "iad.train"
    # ComfyUI's own VAE loader reads it as a Wan VAE, with the trained weights
    vae = ComfyVAE(str(result.final_checkpoint)).vae
    assert type(vae.first_stage_model).__module__ == "comfy.ldm.wan.vae"
    key = "decoder.head.0.gamma"
    assert torch.equal(dict(vae.first_stage_model.named_parameters())[key].float().flatten(), trained[key].flatten())


def test_vae_mode_windows_resume_and_frozen_encoder(dataset, tmp_path):
    from iad.train import run
    from iad.train.config import load_config
    from iad.train.data import PreparedDataset, build_pixel_batch
    from iad.train.vae_training import VAETrainable

    # windows: a 1-latent-frame window is one video frame; a random start picks a later one
    config = load_config(vae_config(dataset, tmp_path / "w", vae={"window": 1, "random_start": True}), check_paths=False)
    data = PreparedDataset(dataset, needs_references=False)
    batch = build_pixel_batch(data, list(range(8)), list(range(8)))
    latents, video = VAETrainable(torch.nn.Identity(), None, config).windows(batch)
    assert latents.shape[2] == 1 and video.shape[2] == 1
    starts = [0 if torch.equal(latents[b], batch["latents"][b, :, :1]) else 1 for b in range(8)]
    assert 0 < sum(starts) < 8                       # both latent frames drawn
    for b, s in enumerate(starts):                   # latent frame s <-> video frame 4s
        assert torch.equal(video[b, :, 0], batch["pixels"][b, 4 * s].permute(2, 0, 1).float() / 127.5 - 1)
    # resume is exact
    whole = run(vae_config(dataset, tmp_path / "whole", steps=6, checkpoint_every=3))
    run(vae_config(dataset, tmp_path / "split", steps=3, checkpoint_every=3))
    resumed = run(vae_config(dataset, tmp_path / "split", steps=6, checkpoint_every=3, resume="auto"))
    a, b = load_file(str(whole.final_checkpoint)), load_file(str(resumed.final_checkpoint))
    assert resumed.resumed_from == 3 and all(torch.equal(a[k], b[k]) for k in a)
    # decoder-only fine-tuning leaves the encoder bit for bit
    result = run(vae_config(dataset, tmp_path / "dec", steps=2, trainable=["decoder.*", "conv2.*"],
                            vae={"encode": 0.0}))
    original, trained = load_file(str(tiny.ensure(tiny.WAN21_VAE))), load_file(str(result.final_checkpoint))
    assert all(torch.equal(trained[k], original[k].float()) for k in original if k.startswith(("encoder.", "conv1.")))
    assert any(not torch.equal(trained[k], original[k].float()) for k in original if k.startswith("decoder."))


def test_vae_mode_refuses_data_without_frames_and_other_vaes(dataset, tmp_path):
    import shutil

    from iad.train import ConfigError, run
    from iad.train.base_model import IncompatibleBaseModelError

    with pytest.raises(ConfigError, match="caption_dropout does not apply to mode 'vae'"):
        run(vae_config(dataset, tmp_path / "a", caption_dropout=0.1))
    with pytest.raises(IncompatibleBaseModelError, match="as a VAE|mode 'vae' trains"):
        run(vae_config(dataset, tmp_path / "b", base_model=str(tiny.ensure(tiny.WAN21_T2V))))
    # a dataset prepared without store_pixels
    from safetensors.torch import save_file

    stripped = tmp_path / "no-pixels"
    shutil.copytree(dataset, stripped)
    for shard in stripped.glob("shard-*.safetensors"):
        tensors = {k: v for k, v in load_file(str(shard)).items() if not k.endswith("target.pixels")}
        with safe_open(str(shard), framework="pt") as f:
            meta = f.metadata()
        save_file(tensors, str(shard), metadata=meta)
    with pytest.raises(ConfigError, match="has no stored frames.*store_pixels: true"):
        run(vae_config(stripped, tmp_path / "c"))
