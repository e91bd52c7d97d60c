"""Lynx nodes in-process: IR-SE50 as the face-embedding backend, and the three-pass Lynx guider."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness import insightface_pack as ip
from harness import tiny_models as tiny
from harness.lynx_files import LynxSpec, random_irse50_state, write_lynx

WAN = tiny.WanSpec("iad-tiny-wan-lynx-4x256.safetensors", dim=256, ffn_dim=512, num_layers=4, seed=9)


def _module(pack, name):
    return importlib.import_module(f"{pack.__name__}.{name}")


@pytest.fixture(scope="module")
def irse50_weights(pack):
    """Seeded random IR-SE50 weights where the node looks for them: ComfyUI/models/facexlib/."""
    import folder_paths

    irse50 = _module(pack, "iad.recognizers.irse50")
    state = random_irse50_state(irse50.expected_keys())
    folder = Path(folder_paths.models_dir) / "facexlib"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "iad-test-irse50.safetensors"
    save_file(state, str(path))
    yield path
    os.unlink(path)


@pytest.fixture(scope="module")
def analyzer(pack, tmp_path_factory):
    fa = _module(pack, "iad.face_analysis")
    root = ip.insightface_root(tmp_path_factory.mktemp("insightface"), {"antelopev2": ip.ensure_pack(ip.ANTELOPEV2)})
    return fa.FaceAnalyzer.load("antelopev2", [root], provider="CPU", cache=False)


def test_irse50_backend_embeds_the_same_aligned_faces_and_feeds_a_lynx_adapter(pack, analyzer, irse50_weights, tmp_path):
    lynx_nodes = _module(pack, "nodes.lynx_nodes")
    face_nodes = _module(pack, "nodes.face_nodes")
    iad_nodes = _module(pack, "nodes.iad_nodes")
    patching = _module(pack, "iad.patching")
    irse50 = _module(pack, "iad.recognizers.irse50")

    assert irse50_weights.name in lynx_nodes.IaDIRSE50FaceEmbedder.GET_SCHEMA().inputs[1].options
    irse = lynx_nodes.IaDIRSE50FaceEmbedder.execute(analyzer, irse50_weights.name).result[0]
    assert irse.embedder == "facexlib/irse50" and analyzer.embedder.startswith("insightface/antelopev2/")

    images = torch.from_numpy(np.stack([ip.face_image(person=0), ip.face_image(person=1, face=80)])).float() / 255.0
    plain = face_nodes.IaDFaceEmbed.execute(analyzer, images).result[0]
    embeds, crops, _mask, info = face_nodes.IaDFaceEmbed.execute(irse, images).result
    assert embeds.embedder == "facexlib/irse50" and "IR-SE50" in info
    # Same detection and 5-point alignment (112 px ArcFace template), different recognizer.
    for a, b in zip(plain.faces, embeds.faces):
        np.testing.assert_array_equal(a.kps, b.kps)
        np.testing.assert_array_equal(a.aligned_crop, b.aligned_crop)
    assert crops.shape == (2, 112, 112, 3)
    # The embeddings are IR-SE50's on those crops (RGB crop -> BGR [-1, 1] inside the recognizer).
    reference = irse50.IRSE50Recognizer(irse50.load_irse50(irse50_weights)).embed_rgb_crops(np.stack([f.aligned_crop for f in embeds.faces]))
    torch.testing.assert_close(embeds.embeddings(), reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(embeds.embeddings(), plain.embeddings(), atol=1e-2)

    # IR-SE50 is under ComfyUI's model management: loaded for the embedding, freed by Unload Models
    # (POST /free), loaded again by the next embedding, with the same result.
    import comfy.model_management as mm

    def resident():
        return [lm for lm in mm.current_loaded_models if lm.model is not None and isinstance(lm.model.model, irse50.IRSE50)]

    assert len(resident()) == 1 and resident()[0].model.model_size() > 0
    mm.unload_all_models()
    assert resident() == []
    again = face_nodes.IaDFaceEmbed.execute(irse, images).result[0]
    assert len(resident()) == 1
    torch.testing.assert_close(again.embeddings(), embeds.embeddings(), atol=0, rtol=0)

    # A Lynx adapter accepts the IR-SE50 embeddings and refuses the insightface ones.
    adapter = _module(pack, "iad.lynx").load_lynx(write_lynx(tmp_path / "lynx_lite", LynxSpec("lite", output=64, entries=1)))
    iad_model = patching.IaDModel.wrap(adapter, "lynx_lite")
    identity = iad_nodes.IaDIdentity.execute(iad_model, embeds, "none", 1.0).result[0]
    assert identity.tokens.shape == (1, 4, 64)
    with pytest.raises(ValueError, match="facexlib/irse50"):
        iad_nodes.IaDIdentity.execute(iad_model, plain, "none", 1.0)


def test_irse50_node_names_the_missing_weights_and_where_to_put_them(pack, analyzer):
    lynx_nodes = _module(pack, "nodes.lynx_nodes")
    expected = r"weights 'recognition_arcface_ir_se50.pth' not found in .*facexlib.*put it in"
    with pytest.raises(ValueError, match=expected):
        lynx_nodes.IaDIRSE50FaceEmbedder.execute(analyzer, "recognition_arcface_ir_se50.pth")
    # ... and already at validation, before anything runs.
    import re

    answer = lynx_nodes.IaDIRSE50FaceEmbedder.validate_inputs(weights="recognition_arcface_ir_se50.pth")
    assert isinstance(answer, str) and re.search(expected, answer), answer


# ----------------------------------------------------------------------------- three-pass guidance


def _one_step(pack, model, guider_or_cfg, positive, negative, noise):
    """One Euler step from sigma_max to 0 returns the (guided) denoised prediction itself."""
    import comfy.sample
    import comfy.samplers

    if isinstance(guider_or_cfg, float):
        return comfy.sample.sample(model, noise, 1, guider_or_cfg, "euler", "simple", positive, negative,
                                   torch.zeros_like(noise), seed=0, disable_pbar=True)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 1)
    return guider_or_cfg.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas,
                                disable_pbar=True, seed=0)


def test_lynx_guider_is_lynxs_three_pass_formula(pack, tmp_path):
    import comfy.sd

    lynx = _module(pack, "iad.lynx")
    patching = _module(pack, "iad.patching")
    iad_nodes = _module(pack, "nodes.iad_nodes")
    lynx_nodes = _module(pack, "nodes.lynx_nodes")
    ft = _module(pack, "iad.face_types")

    model = comfy.sd.load_diffusion_model(str(tiny.ensure(WAN)))
    adapter = lynx.load_lynx(write_lynx(tmp_path / "lynx_full", LynxSpec("full", output=256, model_dim=256, entries=4, registers=2, seed=5)))
    iad_model = patching.IaDModel.wrap(adapter, "lynx_full")
    face = ft.DetectedFace(0, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.9,
                           F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(8)), dim=0))
    identity = iad_nodes.IaDIdentity.execute(iad_model, ft.FaceEmbeds([face], embedder="facexlib/irse50"), "none", 1.0).result[0]
    with_id_cond_only = iad_nodes.IaDApply.execute(model, iad_model, identity, 1.5, 0.0, 1.0, False).result[0]
    with_id_everywhere = iad_nodes.IaDApply.execute(model, iad_model, identity, 1.5, 0.0, 1.0, True).result[0]

    positive = [[torch.randn(1, 10, 4096, generator=torch.Generator().manual_seed(1)), {}]]
    negative = [[torch.randn(1, 10, 4096, generator=torch.Generator().manual_seed(2)), {}]]
    noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(3))

    pos_id = _one_step(pack, with_id_everywhere, 1.0, positive, negative, noise)     # cfg 1: positive pass only
    neg_id = _one_step(pack, with_id_everywhere, 1.0, negative, positive, noise)
    uncond = _one_step(pack, model, 1.0, negative, positive, noise)                  # the unpatched model
    cfg, cfg_identity = 5.0, 2.0
    expected = uncond + cfg_identity * (neg_id - uncond) + cfg * (pos_id - neg_id)

    guider = lynx_nodes.IaDLynxGuider.execute(with_id_cond_only, positive, negative, cfg, cfg_identity).result[0]
    out = _one_step(pack, with_id_cond_only, guider, positive, negative, noise)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    # The identity term matters (else the check above would not tell the guider from plain CFG).
    plain_cfg = uncond + cfg * (pos_id - uncond)
    assert float((out - plain_cfg).abs().max()) > 1e-2
    # With cfg_identity = 1 the formula reduces to CFG between (pos, id) and (neg, id).
    guider = lynx_nodes.IaDLynxGuider.execute(with_id_cond_only, positive, negative, cfg, 1.0).result[0]
    out = _one_step(pack, with_id_cond_only, guider, positive, negative, noise)
    torch.testing.assert_close(out, neg_id + cfg * (pos_id - neg_id), atol=1e-4, rtol=1e-4)


def test_iad_model_loader_loads_a_lynx_folder_from_models_iad(pack):
    import shutil

    import folder_paths

    _module(pack, "nodes.model_paths").register_model_folders()   # what the pack's entry point does at start-up
    iad_nodes = _module(pack, "nodes.iad_nodes")
    folder = Path(folder_paths.get_folder_paths("iad")[0]) / "iad-test-lynx_full"
    try:
        write_lynx(folder, LynxSpec("full", entries=2, registers=3))
        names = folder_paths.get_filename_list("iad")
        assert "iad-test-lynx_full/resampler.safetensors" in names and "iad-test-lynx_full/ip_layers.safetensors" in names
        for name in ("iad-test-lynx_full/resampler.safetensors", "iad-test-lynx_full/ip_layers.safetensors"):
            iad_model = iad_nodes.IaDModelLoader.execute(name).result[0]
            config = iad_model.config
            assert (config.embedder, config.num_registers, config.blocks) == ("facexlib/irse50", 3, [0, 1])
            # built from ComfyUI's casting layers, as ComfyUI's own models are
            import comfy.ops
            assert isinstance(iad_model.adapter.blocks["0"].to_k_ip, comfy.ops.manual_cast.Linear)
        (folder / "ip_layers.safetensors").write_bytes(b"\0" * 64)
        with pytest.raises(ValueError, match="ip_layers.safetensors"):
            iad_nodes.IaDModelLoader.execute("iad-test-lynx_full/resampler.safetensors")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_colour_order_measurement_runs_and_is_exact_on_a_grey_photo(pack, analyzer, irse50_weights):
    """benchmarks/bench_lynx_colour_order.py on generated stand-ins: the tool works end to end, and
    on a grey photo (RGB == BGR) Lynx's and IaD's detections coincide exactly."""
    import importlib.util

    irse50 = _module(pack, "iad.recognizers.irse50")
    spec = importlib.util.spec_from_file_location(
        "bench_lynx_colour_order", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lynx_colour_order.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    irse = irse50.analyzer_with_irse50(analyzer, irse50.IRSE50Recognizer(irse50.load_irse50(irse50_weights)))
    colour = ip.face_image(person=1, face=80)
    grey = np.repeat(colour.mean(-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    rows = {r["photo"]: r for r in bench.measure(irse, {"colour": colour, "grey": grey})}
    assert rows["grey"]["kps_shift_max"] == 0.0 and rows["grey"]["ref_crop_mean_abs"] == 0.0
    assert rows["grey"]["embedding_cosine"] == pytest.approx(1.0, abs=1e-6)
    colour_row = rows["colour"]
    assert colour_row["faces"] == [True, True]
    assert np.isfinite([colour_row["kps_shift_mean"], colour_row["embedding_cosine"], colour_row["ref_crop_mean_abs"]]).all()
