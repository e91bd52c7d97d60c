"""The synthetic portrait world: renderer, grammar, text encoder, codec, the shipped face pack
(through the real insightface routing and iad.face_analysis), reproducibility of the build, and
the synthetic-world nodes."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synthworld import assets, build, experiment, faces, text, wan_vae, world


@pytest.fixture(scope="module")
def shipped():
    return experiment.World(assets.WORLD_DIR)


def _frame(identity, action="neutral", scene="studio"):
    return world.render([identity], world.action_vector(action, 1.0)[None], [scene])[0]


def test_renderer_is_deterministic_and_every_factor_is_visible():
    person = world.sample_identities(1, seed=3)[0]
    base = _frame(person)
    assert torch.equal(base, _frame(person))
    assert base.shape == (3, world.SIZE, world.SIZE) and 0 <= float(base.min()) and float(base.max()) <= 1
    tables = {"face": world.FACE_SHAPES, "skin": world.SKIN_TONES, "hair_colour": world.HAIR_COLOURS,
              "hair_style": world.HAIR_STYLES, "eye_colour": world.EYE_COLOURS, "eye_spacing": world.EYE_SPACINGS,
              "nose": world.NOSE_SIZES, "brows": world.BROWS, "accessory": world.ACCESSORIES}
    for factor, table in tables.items():
        other = replace(person, **{factor: (getattr(person, factor) + 1) % len(table)})
        diff = float((_frame(other) - base).abs().sum())
        assert diff > 0.5, f"changing {factor} does not change the picture ({diff})"   # the nose is the subtlest (~0.9)
    for action in world.ACTIONS[1:]:
        diff = float((_frame(person, action) - base).abs().sum())
        assert diff > 1.0, f"action {action} is invisible"
    assert float((_frame(person, scene="beach") - base).abs().sum()) > 10


def test_caption_grammar_and_text_encoder():
    cap = world.caption("turn_left", "beach")
    assert cap == "a person turns left at the beach"
    assert world.parse_caption(cap) == ("turn_left", "beach")
    assert world.parse_caption("a person at night") == (None, "night")
    assert world.parse_caption("A person looks surprised, in a forest") == ("surprise", "forest")
    looks = world.appearance(world.Identity(face=0, skin=0, hair_colour=2, hair_style=0, eye_colour=0, eye_spacing=0,
                                            nose=0, brows=0, accessory=1))
    assert looks == "with blond hair wearing glasses"
    described = world.caption("smile", "forest", looks)
    assert described == "a person with blond hair wearing glasses smiles in a forest"
    assert world.parse_caption(described) == ("smile", "forest") and text.unknown_words(described) == []
    enc = text.encode([cap, "a person at the beach turns left", ""])
    assert enc.shape == (3, text.MAX_TOKENS, 4096)
    assert torch.equal(enc[0], text.encode(cap)[0])                 # deterministic
    assert not torch.allclose(enc[0], enc[1])                        # word order matters
    assert torch.count_nonzero(enc[2]) == 0                          # empty caption = zero padding
    assert text.tokenize("a person looks surprised") == [text.VOCABULARY.index("a person"),
                                                         text.VOCABULARY.index("looks surprised")]
    assert text.unknown_words("a person dances") == ["dances"]


def test_shipped_files_match_the_manifest():
    manifest = assets.manifest()
    for name, digest in manifest["files"].items():
        assert build.sha256(assets.WORLD_DIR / name) == digest, f"{name} differs from the manifest: rebuild the world"
    total = sum((assets.WORLD_DIR / n).stat().st_size for n in manifest["files"])
    assert total < 20 * 2**20, f"the shipped world is {total / 2**20:.1f} MB"


def test_tiny_build_is_bit_for_bit_reproducible(tmp_path):
    tiny = replace(build.SMOKE, train_identities=8, clips_per_identity=2, recognizer_steps=6, detector_steps=6,
                   classifier_steps=6, wan_steps=3, decoupler_steps=4, adapter_steps=2)
    built = build.build_world(tmp_path / "a", tiny, log=lambda *_: None)
    first = built["files"]
    second = build.build_world(tmp_path / "b", tiny, log=lambda *_: None)["files"]
    assert built["cpu"] == build.cpu_kind()        # the CPU type decides the files' last bits
    assert first == second and len(first) == 8 + len(build.BASE_DELTA_FILES)     # + the jointly trained base deltas

    # a variant build of the IaD adapter alone copies the naive systems from the reference build;
    # this one also trains IaD on the naive adapter's same-clip references (the reference ablation)
    variant = build.build_world(tmp_path / "c", replace(tiny, iad_references="same_clip"), log=lambda *_: None,
                                reuse_judges_from=tmp_path / "a", adapters=("iad",), adapter_overrides={"token_dim": 24})
    naive = [build.ADAPTER_FILES["naive"], build.ADAPTER_FILES["naive_tf"], build.BASE_DELTA_FILES["naive"]]
    assert all(variant["files"][n] == first[n] for n in naive)
    assert variant["files"][build.ADAPTER_FILES["iad"]] != first[build.ADAPTER_FILES["iad"]]
    assert variant["reused"]["naive_adapters_from"] == "a" and variant["adapter_overrides"] == {"token_dim": 24}
    assert variant["scale"]["iad_references"] == "same_clip"
    from iad.checkpoint import inspect_adapter

    assert inspect_adapter(tmp_path / "c" / build.ADAPTER_FILES["iad"]).extra["dataset"] == "same_clip"
    with pytest.raises(ValueError, match="reuse_judges_from"):
        build.build_world(tmp_path / "d", tiny, adapters=("iad",))
    with pytest.raises(ValueError, match="iad_references must be one of"):
        build.build_world(tmp_path / "e", replace(tiny, iad_references="target_frame"))
    assert not (tmp_path / "e").exists()        # refused before any work
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="iad_loss_weight must be a finite number >= 0"):
            build.build_world(tmp_path / "f", replace(tiny, iad_loss_weight=bad))
        assert not (tmp_path / "f").exists()


def test_codec_and_action_classifier_on_heldout_people(shipped):
    people = experiment.heldout_identities(assets.WORLD_DIR, 24, seed=11)
    ds = build.make_dataset(people, 6, seed=123, omit_action_prob=0.0)
    rt = shipped.codec.decode(shipped.codec.encode(ds.video))
    assert float((rt - ds.video).abs().mean()) < 0.03
    labels = torch.from_numpy(np.concatenate([c.labels for c in ds.clips]))
    with torch.no_grad():
        accuracy, clean = (float((shipped.classifier(v.reshape(-1, 3, world.SIZE, world.SIZE)).argmax(-1) == labels)
                                 .float().mean()) for v in (rt, ds.video))
    # docs/results.md quotes these (24 people x 6 clips: 93.0 % round trip, 94.9 % clean; pytest -s prints them)
    print(f"\naction classifier on held-out people's frames: {accuracy:.3f} codec round trip, {clean:.3f} clean")
    assert accuracy > 0.85 and clean > 0.85


def _comfy_vae(path):
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    return comfy.sd.VAE(sd=sd, metadata=metadata)


def test_shipped_wan_vae_loads_in_comfyui_and_decodes_the_worlds_latents(shipped):
    """The world's VAE file is read by ComfyUI's own VAE loader as a Wan 2.1 VAE, decodes the
    world's latents (the codec's) to the 64x64, 33-frame video whose frames 4k are the world's
    frames, and encodes that video back to the codec's latents."""
    import comfy.latent_formats

    vae = _comfy_vae(assets.world_files()["vae"])
    assert type(vae.first_stage_model).__name__ == "WanVAE" and vae.latent_channels == 16
    assert vae.first_stage_model.dim == wan_vae.VAE_DIM and vae.upscale_ratio[1] == 8
    people = experiment.heldout_identities(assets.WORLD_DIR, 8, seed=21)
    ds = build.make_dataset(people, 2, seed=5, omit_action_prob=0.0)
    fmt = comfy.latent_formats.Wan21()
    model_latents = shipped.codec.encode(ds.video)
    with torch.no_grad():
        decoded = vae.decode(fmt.process_out(model_latents))             # [B, 33, 64, 64, 3] in [0, 1]
    assert decoded.shape == (len(ds.clips), wan_vae.VIDEO_FRAMES, wan_vae.VIDEO_SIZE, wan_vae.VIDEO_SIZE, 3)
    frames = torch.stack([wan_vae.world_frames(clip) for clip in decoded])
    error = float((frames - ds.video).abs().mean())
    labels = torch.from_numpy(np.concatenate([c.labels for c in ds.clips]))
    with torch.no_grad():
        accuracy = float((shipped.classifier(frames.reshape(-1, 3, world.SIZE, world.SIZE)).argmax(-1) == labels)
                         .float().mean())
    video = (wan_vae.presentation_video(ds.video) + 1) / 2                # [B, 3, 33, 64, 64]
    with torch.no_grad():
        encoded = torch.cat([fmt.process_in(vae.encode(clip.permute(1, 2, 3, 0))) for clip in video])
    encode_error = float((encoded - model_latents).pow(2).mean() / model_latents.pow(2).mean())
    by_frame = ((encoded - model_latents).pow(2).mean(dim=(0, 1, 3, 4)) / model_latents.pow(2).mean()).tolist()
    print("\nencode relative error by latent frame: " + " ".join(f"{e:.3f}" for e in by_frame))
    print(f"\nworld VAE on held-out clips: decode mean abs error {error:.4f} (codec "
          f"{float((shipped.codec.decode(model_latents) - ds.video).abs().mean()):.4f}), action classifier "
          f"{accuracy:.3f} on decoded frames, encode relative error {encode_error:.3f}")
    # published (docs/synth-world.md): 0.021 (codec 0.008), 95.1 % (codec 100 %), 0.087
    assert error < 0.035 and accuracy > 0.9 and encode_error < 0.15


def test_wan_vae_video_layout_and_training_are_deterministic(tmp_path):
    clips = world.render_clips([world.sample_clip(p, np.random.default_rng(i))
                                for i, p in enumerate(world.sample_identities(3, seed=4))])
    video = wan_vae.presentation_video(clips)
    assert video.shape == (3, 3, wan_vae.VIDEO_FRAMES, wan_vae.VIDEO_SIZE, wan_vae.VIDEO_SIZE)
    images = ((video[0] + 1) / 2).permute(1, 2, 3, 0)                       # what VAE Decode returns for clip 0
    assert torch.allclose(wan_vae.world_frames(images), clips[0], atol=1e-6)
    # frames between world frames are blends of their neighbours
    assert torch.allclose(video[:, :, 2], (video[:, :, 0] + video[:, :, 4]) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="4k\\+1"):
        wan_vae.world_frames(images[:-1])
    # the VAE's training set (iad.train mode 'vae'): video frame 4k of a clip is its world frame k
    from synthworld import training_set
    from iad.train.data import PreparedDataset

    codec = experiment.World(assets.WORLD_DIR).codec
    training_set.write_vae_training_set(tmp_path / "vae-data", clips, codec.encode(clips))
    data = PreparedDataset(tmp_path / "vae-data", needs_references=False)
    pixels = data.tensor(1, "target.pixels")                                # [33, 64, 64, 3] uint8
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (wan_vae.VIDEO_FRAMES, 64, 64, 3)
    assert (wan_vae.world_frames(pixels.float() / 255) - clips[1]).abs().max() <= 0.5 / 255 + 1e-6
    # trained by iad.train: seeded, without touching the global RNG, in ComfyUI's key names
    tiny = replace(build.SMOKE, vae_steps=1, vae_tune_steps=1, vae_batch=1)
    rng = torch.get_rng_state()
    files = [build.train_vae_file(tmp_path / name, clips, codec, tiny, log=lambda *_: None) for name in ("a", "b")]
    assert torch.equal(rng, torch.get_rng_state())
    for path in files:   # safetensors writes its metadata in hash-map order; the build sorts it
        build.canonicalize_safetensors(path)
    assert build.sha256(files[0]) == build.sha256(files[1])
    assert set(load_file(str(files[0]))) == set(wan_vae.state_dict_for_file(wan_vae.build_vae(0)))


def test_shipped_pack_runs_through_insightface_and_knows_heldout_people(shipped):
    from iad.face_analysis import FaceAnalyzer

    analyzer = shipped.analyzer
    assert type(analyzer.detector).__name__ == "SCRFD" and analyzer.crop_size == 112
    assert analyzer.embedder == build.EMBEDDER
    people = experiment.heldout_identities(assets.WORLD_DIR, 8, seed=5)
    photos = [experiment.photo(p, a) for p in people for a in ("neutral", "smile", "turn_left")]
    found = [analyzer.detect(img, landmarks=False, retry=False) for img in photos]
    assert all(len(f) == 1 for f in found), "the detector misses a face of the world"
    # box and keypoints agree with the renderer's ground truth
    gt_kps = world.keypoints([people[0]], world.action_vector("neutral", 1.0)[None])[0]
    assert np.abs(found[0][0].kps - gt_kps).max() < 2.0
    # no face on scenes without a person
    empties = faces.to_uint8(build.negatives(12, seed=77))
    assert sum(len(analyzer.detect(img, landmarks=False, retry=False)) for img in empties) <= 1
    # the ONNX recognizer computes what the torch recognizer computes
    crop = found[0][0].aligned_crop
    with torch.no_grad():
        torch_emb = torch.nn.functional.normalize(shipped.recognizer(faces.crop_input(crop[None])), dim=-1)[0]
    assert torch.allclose(torch_emb, found[0][0].embedding, atol=1e-4)
    # same person (different expression) is closer than other people
    emb = torch.stack([f[0].embedding for f in found]).reshape(len(people), 3, -1)
    same = torch.einsum("pd,pd->p", emb[:, 0], emb[:, 1]).mean()
    other = torch.einsum("pd,qd->pq", emb[:, 0], emb[:, 1])[~torch.eye(len(people), dtype=bool)].mean()
    print(f"\nheld-out people: same-person cosine {float(same):.3f}, different-person {float(other):.3f}")
    assert same > other + 0.2
    assert FaceAnalyzer.load(str(assets.WORLD_DIR / build.PACK_NAME), det_size=160, provider="cpu") is analyzer


def test_synthetic_world_nodes_in_process(pack, shipped):
    mod = importlib.import_module(f"{pack.__name__}.synthworld.nodes")
    cond = mod.IaDSynthWorldTextEncode.execute("a person nods in a forest").args[0]
    assert cond[0][0].shape == (1, text.MAX_TOKENS, 4096) and cond[0][1] == {}
    photo = mod.IaDSynthWorldPerson.execute(person=2, expression="frown", scale=4).args[0]
    assert photo.shape == (1, 128, 128, 3)
    assert len(shipped.analyzer.detect((photo[0].numpy() * 255).astype(np.uint8), landmarks=False)) == 1
    import comfy.latent_formats

    people = experiment.heldout_identities(assets.WORLD_DIR, 1, seed=9)
    clip = world.sample_clip(people[0], np.random.default_rng(0))
    video = world.render_clips([clip])
    latent = comfy.latent_formats.Wan21().process_out(shipped.codec.encode(video))
    frames = mod.IaDSynthWorldDecode.execute({"samples": latent}, scale=1).args[0]
    assert frames.shape == (world.FRAMES, world.SIZE, world.SIZE, 3)
    assert float((frames.permute(0, 3, 1, 2) - video[0]).abs().mean()) < 0.03
    with pytest.raises(ValueError, match="Wan video latent"):
        mod.IaDSynthWorldDecode.execute({"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(ValueError, match="unknown expression"):
        mod.IaDSynthWorldPerson.execute(person=0, expression="dance")


def test_manifest_records_the_build():
    manifest = json.loads((assets.WORLD_DIR / "manifest.json").read_text())
    assert manifest["scale"] == json.loads(json.dumps(build.FULL.__dict__))
    assert set(manifest["timings_s"]) >= {"wan base model", "naive adapter", "IaD adapter"}


def test_world_training_sets_are_iad_train_datasets_with_each_systems_references(tmp_path):
    """The adapters train with iad.train on the world's clips written as prepared datasets: naive
    injection's references are frames of the target clip itself, IaD's are frames of the same
    person's other clips; the latents map back to the codec's exactly as the trainer maps them."""
    from synthworld import training_set
    from iad.train.data import PreparedDataset, build_batch

    people = world.sample_identities(3, seed=42)
    ds = build.make_dataset(people, 2, seed=43, omit_action_prob=0.5)
    latents = torch.randn(len(ds.clips), 16, world.FRAMES, 8, 8)
    contexts = text.encode([c.caption for c in ds.clips])
    emb = torch.nn.functional.normalize(torch.randn(len(ds.clips), world.FRAMES, 512), dim=-1)
    crops = np.zeros((len(ds.clips), world.FRAMES, 28, 28, 3), np.uint8)
    for policy in training_set.REFERENCE_POLICIES:
        training_set.write_training_set(tmp_path / policy, ds, latents, contexts, build.action_text_embeddings(), emb,
                                        crops, references=policy, embedder=build.EMBEDDER)
    import comfy.latent_formats   # ComfyUI was located and imported by write_training_set

    same, other = PreparedDataset(tmp_path / "same_clip"), PreparedDataset(tmp_path / "other_clips")
    assert len(same) == len(other) == 6 and same.persons == other.persons and same.embedder == build.EMBEDDER
    for i in range(6):
        own = emb[i]
        assert torch.equal(same.tensor(i, "ref.embeddings"), own)                      # naive: the clip's own frames
        refs = other.tensor(i, "ref.embeddings")
        mates = [j for j in range(6) if int(ds.person[j]) == int(ds.person[i]) and j != i]
        assert torch.equal(refs, torch.cat([emb[j] for j in mates]))                   # IaD: the other clips only
        assert not any(torch.equal(r, e) for r in refs for e in own)
        back = comfy.latent_formats.Wan21().process_in(same.tensor(i, "latents"))
        assert torch.allclose(back, latents[i], atol=1e-5)
        assert torch.equal(same.tensor(i, "text").float(), contexts[i].half().float())
    batch = build_batch(other, [0, 3], [0, 1], 0, seed=0, num_references=1)
    assert batch["references"].shape == (2, 1, 512) and batch["context"].shape == (2, text.MAX_TOKENS, 4096)
    assert other.action_index.keys() <= {"a person", *world.ACTION_PHRASES.values()}
    with pytest.raises(ValueError, match="references must be one of"):
        training_set.write_training_set(tmp_path / "x", ds, latents, contexts, build.action_text_embeddings(), emb, crops,
                                        references="target_frame", embedder=build.EMBEDDER)


def test_shipped_models_were_trained_by_iad_train():
    """The world's Wan T2V model (mode 'base'), its VAE (mode 'vae') and both adapters all come from
    the pack's trainer, and each file says so."""
    from iad.checkpoint import inspect_adapter
    from safetensors import safe_open

    for name, dataset, steps in ((build.WAN_FILE, "other_clips", build.FULL.wan_steps),
                                 (build.VAE_FILE, "vae-data", build.FULL.vae_tune_steps)):
        with safe_open(str(assets.WORLD_DIR / name), framework="pt") as f:
            info = json.loads(f.metadata()["iad_train"])
        assert info["trainer"] == "iad.train" and info["trained_steps"] == steps and info["dataset"] == dataset, (name, info)
        assert info["trainable"] == ["*"]

    for kind in ("naive", "iad"):
        config = inspect_adapter(assets.WORLD_DIR / build.ADAPTER_FILES[kind])
        assert config.extra["trainer"] == "iad.train" and config.extra["trained_steps"] == build.FULL.adapter_steps
        assert config.extra["base_model"] == build.WAN_FILE
        assert config.extra["dataset"] == ("same_clip" if kind == "naive" else "other_clips")
        # trained jointly with the base: its change is a LoRA-format delta of every base parameter
        with safe_open(str(assets.WORLD_DIR / build.BASE_DELTA_FILES[kind]), framework="pt") as f:
            info = json.loads(f.metadata()["iad_train"])
            keys = list(f.keys())
        assert info["base_trainable"] == list(build.FULL.adapter_base_trainable) and info["trained_steps"] == build.FULL.adapter_steps
        assert keys and all(k.startswith("diffusion_model.") and k.endswith((".diff", ".diff_b")) for k in keys)
