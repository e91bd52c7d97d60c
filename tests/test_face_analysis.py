"""iad.face_analysis with real insightface and real onnxruntime on a generated insightface-format
pack (tests/harness/insightface_pack.py): detection, alignment, batched embedding, selection,
retries, same-person check, pack discovery and every failure mode of the issue, without ComfyUI."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from harness import insightface_pack as ip
from iad import face_analysis as fa
from iad.face_types import FaceEmbeds


@pytest.fixture(scope="module")
def packs() -> dict[str, Path]:
    return {"antelopev2": ip.ensure_pack(ip.ANTELOPEV2), "buffalo_l": ip.ensure_pack(ip.BUFFALO_L)}


@pytest.fixture(scope="module")
def root(tmp_path_factory, packs) -> Path:
    """An insightface model folder laid out like ComfyUI/models/insightface."""
    return ip.insightface_root(tmp_path_factory.mktemp("insightface"), packs)


@pytest.fixture(scope="module")
def analyzer(root) -> fa.FaceAnalyzer:
    return fa.FaceAnalyzer.load("antelopev2", [root])


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test loudly instead of reaching the network."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args)[:200])
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import insightface.utils.storage as storage

    monkeypatch.setattr(storage, "download_file", refuse, raising=False)
    monkeypatch.setattr(storage, "download", refuse)
    return attempts


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def two_faces(big_offset: float = 4.0) -> np.ndarray:
    """A 640 px photo: a large face slightly off the detector's anchor grid (lower score) at the
    left, a small face exactly on it (higher score) at the right."""
    image = np.full((640, 640, 3), 90, np.uint8)
    ip.draw_face(image, 192 + big_offset, 320 + big_offset, 128, person=0)
    ip.draw_face(image, 480, 320, 64, person=1)
    return image


# -- the generated pack -----------------------------------------------------------------------------
def test_generated_pack_is_routed_by_insightface_like_the_real_one(packs):
    from insightface.model_zoo import model_zoo

    expected = {"scrfd_10g_bnkps.onnx": "detection", "2d106det.onnx": "landmark_2d_106",
                "1k3d68.onnx": "landmark_3d_68", "genderage.onnx": "genderage", "glintr100.onnx": "recognition"}
    for name, task in expected.items():
        model = model_zoo.get_model(str(packs["antelopev2"] / name), providers=["CPUExecutionProvider"])
        assert model.taskname == task, name
    detector = model_zoo.get_model(str(packs["antelopev2"] / "scrfd_10g_bnkps.onnx"), providers=["CPUExecutionProvider"])
    assert detector.use_kps and detector.fmc == 3 and detector._num_anchors == 2
    assert sum(p.stat().st_size for p in packs["antelopev2"].glob("*.onnx")) < 2 * 1024 * 1024
    assert sorted(p.name for p in packs["buffalo_l"].glob("*.onnx")) == sorted(ip.BUFFALO_L_FILES.values())


def test_generated_pack_is_bit_identical_across_generations(tmp_path, packs):
    again = ip.ensure_pack(ip.ANTELOPEV2, tmp_path)
    for file in packs["antelopev2"].glob("*.onnx"):
        assert (again / file.name).read_bytes() == file.read_bytes(), file.name


# -- detection, alignment, embedding ------------------------------------------------------------------
def test_detects_the_drawn_face_aligns_and_embeds_it(analyzer):
    image = np.full((640, 640, 3), 90, np.uint8)
    box = ip.draw_face(image, 320, 320, 128, person=0)
    faces = analyzer.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.bbox, box) > 0.9 and face.det_score > 0.9
    expected_kps = np.array([320, 320]) + ip.KPS_UNITS * 64
    assert np.abs(face.kps - expected_kps).max() < 2.0
    assert face.embedding.shape == (512,) and torch.isclose(face.embedding.norm(), torch.tensor(1.0), atol=1e-5)
    assert face.aligned_crop.shape == (112, 112, 3) and face.aligned_crop.dtype == np.uint8
    # The aligned crop puts the drawn eyes where ArcFace's template wants them: dark there.
    eye = face.aligned_crop[51:53, 37:40].mean()
    assert eye < 60, eye
    assert face.landmark_2d_106.shape == (106, 2) and face.landmark_3d_68.shape == (68, 3)
    assert face.pose.shape == (3,) and np.abs(face.pose).max() < 10, face.pose  # the mean shape is frontal
    assert analyzer.embedder == "insightface/antelopev2/glintr100"


def test_same_person_matches_across_size_and_position_and_other_persons_do_not(analyzer):
    a = ip.face_image(person=0)
    b = np.full((640, 480, 3), 40, np.uint8)
    ip.draw_face(b, 224, 352, 64, person=0)
    c = ip.face_image(person=1)
    z = analyzer.embed_images([a, b, c], same_person_threshold=None).embeddings()
    assert float(z[0] @ z[1]) > 0.95
    assert float(z[0] @ z[2]) < 0.0


def test_a_batch_is_embedded_with_one_recognizer_call(analyzer, monkeypatch):
    session = analyzer.recognizer.session
    batches: list[int] = []
    real_run = session.run

    def counting_run(output_names, feeds, *args, **kwargs):
        batches.append(next(iter(feeds.values())).shape[0])
        return real_run(output_names, feeds, *args, **kwargs)

    monkeypatch.setattr(session, "run", counting_run)
    images = [ip.face_image(person=p % 3) for p in range(5)]
    embeds = analyzer.embed_images(images, same_person_threshold=None)
    assert batches == [5], batches
    batches.clear()
    one_by_one = torch.cat([analyzer.embed_aligned([f.aligned_crop]) for f in embeds.faces])
    assert batches == [1] * 5
    assert torch.allclose(one_by_one, embeds.embeddings(), atol=1e-5)


def test_landmarks_are_batched_and_match_insightface_per_face(analyzer, monkeypatch):
    from insightface.app.common import Face

    runs: dict[str, list[int]] = {}
    for role, model in analyzer.landmarks.items():
        real_run = model.session.run

        def counting_run(names, feeds, *args, _role=role, _run=real_run, **kwargs):
            runs.setdefault(_role, []).append(next(iter(feeds.values())).shape[0])
            return _run(names, feeds, *args, **kwargs)

        monkeypatch.setattr(model.session, "run", counting_run)
    images = [ip.face_image(person=0), ip.face_image(640, 64, centre=(208, 400)), ip.face_image(person=2)]
    embeds = analyzer.embed_images(images, same_person_threshold=None)
    assert runs == {"landmark_2d_106": [3], "landmark_3d_68": [3]}
    for face, image in zip(embeds.faces, images):
        record = Face(bbox=face.bbox, kps=face.kps, det_score=face.det_score)
        for model in analyzer.landmarks.values():
            model.get(np.ascontiguousarray(image[..., ::-1]), record)  # insightface's own per-face path
        assert np.allclose(face.landmark_2d_106, record["landmark_2d_106"], atol=1e-3)
        assert np.allclose(face.landmark_3d_68, record["landmark_3d_68"], atol=1e-3)
        assert np.allclose(face.pose, record["pose"], atol=1e-3)


def test_embed_images_returns_typed_face_embeds(analyzer):
    images = torch.from_numpy(np.stack([ip.face_image(person=0), ip.face_image(person=0)])).float() / 255.0
    embeds = analyzer.embed_images(images)
    assert isinstance(embeds, FaceEmbeds) and len(embeds) == 2 and embeds.dim == 512
    assert [f.image_index for f in embeds.faces] == [0, 1]
    assert embeds.image_sizes == [(320, 320), (320, 320)]
    assert embeds.embedder == "insightface/antelopev2/glintr100"
    assert torch.isclose(embeds.mean_embedding().norm(), torch.tensor(1.0))
    assert not any("Identity warning" in line for line in embeds.info)


# -- selection ----------------------------------------------------------------------------------------
def test_several_faces_are_picked_by_policy_and_the_choice_is_reported(analyzer):
    image = two_faces()
    faces = analyzer.detect(image)
    assert len(faces) == 2
    big = max(faces, key=lambda f: f.bbox[2] - f.bbox[0])
    small = min(faces, key=lambda f: f.bbox[2] - f.bbox[0])
    assert small.det_score > big.det_score  # the off-grid face scores lower
    largest = analyzer.embed_images([image], policy="largest")
    assert np.allclose(largest.faces[0].bbox, big.bbox)
    assert "2 faces found, picked the largest" in largest.info[0]
    confident = analyzer.embed_images([image], policy="most confident")
    assert np.allclose(confident.faces[0].bbox, small.bbox)
    assert "picked the most confident" in confident.info[0]
    left = analyzer.embed_images([image], policy="index", face_index=0)
    right = analyzer.embed_images([image], policy="index", face_index=1)
    assert np.allclose(left.faces[0].bbox, big.bbox) and np.allclose(right.faces[0].bbox, small.bbox)
    assert "face 1 from the left" in right.info[0]
    with pytest.raises(fa.FaceAnalysisError) as error:
        analyzer.embed_images([image], policy="index", face_index=2)
    message = str(error.value)
    assert "image 1 of 1" in message and "2 face(s)" in message and "0..1 from left to right" in message


# -- retries and missing faces -----------------------------------------------------------------------
def test_face_filling_the_frame_is_found_at_a_smaller_detection_size(analyzer):
    image = np.full((320, 320, 3), 90, np.uint8)
    box = ip.draw_face(image, 160, 160, 128)  # 256 px at detection size 640: too big for any anchor
    assert analyzer.detect(image, retry=False) == []
    embeds = analyzer.embed_images([image])
    assert iou(embeds.faces[0].bbox, box) > 0.9
    assert "found only after retrying at detection size 320" in embeds.info[0]


def test_tight_crop_is_found_after_padding(analyzer):
    image = np.full((200, 200, 3), 90, np.uint8)
    ip.draw_face(image, 100, 100, 200, ring=False)  # the face touches every border
    embeds = analyzer.embed_images([image])
    assert iou(embeds.faces[0].bbox, [0, 0, 200, 200]) > 0.9
    assert "padding around the image (tight crop)" in embeds.info[0]
    # Coordinates are mapped back to the unpadded image and the crop is still the face.
    reference = analyzer.embed_images([ip.face_image(person=0)]).embeddings()[0]
    assert float(embeds.embeddings()[0] @ reference) > 0.9


def test_no_face_in_image_k_names_the_image_and_what_was_tried(analyzer):
    blank = np.full((320, 320, 3), 90, np.uint8)
    with pytest.raises(fa.NoFaceError) as error:
        analyzer.embed_images([ip.face_image(), blank, ip.face_image()])
    message = str(error.value)
    assert "No face found in image 2 of 3 (batch index 1)" in message
    assert "320/256/160/128" in message and "padding" in message and "minimum detection score" in message
    assert error.value.image_indices == [1]
    skipped = analyzer.embed_images([ip.face_image(), blank], on_missing="skip")
    assert [f.image_index for f in skipped.faces] == [0]
    assert any("skipped" in line and "image 2 of 2" in line for line in skipped.info)


def test_faceless_photos_give_no_face_even_with_a_detector_that_hallucinates(monkeypatch):
    """The synthetic world's toy detector fires on the black frame that the padding retry draws
    around a flat or noisy photo, with boxes that reach far outside it. A face found only in a
    padded image must lie mostly inside the photo (box and landmarks): here none does, so the
    answer is "no face in image k" with the fix, not a hallucinated face."""
    from synthworld.assets import world_files

    hallucinating = fa.FaceAnalyzer.load(world_files()["insightface_pack"], None)
    photos = {
        "flat grey 140 px": np.full((140, 140, 3), 128, np.uint8),
        "flat grey 320 px": np.full((320, 320, 3), 128, np.uint8),
        "noise 112 px": np.random.default_rng(1).integers(0, 256, (112, 112, 3), dtype=np.uint8),
        "noise 320 px": np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8),
    }
    for name, photo in photos.items():
        with pytest.raises(fa.NoFaceError) as error:
            hallucinating.embed_images([photo])
        message = str(error.value)
        assert "No face found in image 1 of 1" in message and "mostly outside the photo" in message, (name, message)
        assert "Use a photo where the face is clearly visible" in message
    # The rule is what refuses them: without it the same detector reports a face reaching outside.
    monkeypatch.setattr(fa.detection, "inside_photo", lambda *args: True)
    for name, photo in photos.items():
        face = hallucinating.embed_images([photo]).faces[0]
        x0, y0, x1, y1 = face.bbox
        assert x0 < -1 or y0 < -1 or x1 > photo.shape[1] + 1 or y1 > photo.shape[0] + 1, (name, face.bbox)


def test_reference_photos_of_different_people_are_named(analyzer):
    images = [ip.face_image(person=0), ip.face_image(person=0), ip.face_image(person=1), ip.face_image(person=0)]
    embeds = analyzer.embed_images(images)
    warning = embeds.info[-1]
    assert warning.startswith("Identity warning: image 3 of 4 (batch index 2)")
    assert "image 1 of 4" not in warning and "other 3 photos" in warning
    pair = analyzer.embed_images([ip.face_image(person=0), ip.face_image(person=2)])
    assert "image 1 of 2 (batch index 0) and image 2 of 2 (batch index 1) do not look like the same person" in pair.info[-1]


# -- real photos (plumbing): real JPEG/PNG content, several faces -------------------------------------
def _real_photo(relative: str, package: str) -> np.ndarray:
    module = __import__(package)
    path = Path(module.__file__).parent / relative
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_real_photos_with_several_faces(analyzer):
    group = _real_photo("data/images/t1.jpg", "insightface")  # six people, 1280x886
    assert analyzer.detect(group, retry=False) == []  # the test detector does not fire on real faces
    boxes = [ip.draw_face(group, x, 320, 128, person=p) for x, p in ((320, 0), (640, 1), (960, 0))]
    faces = analyzer.detect(group)
    assert len(faces) == 3
    for box in boxes:
        assert max(iou(f.bbox, box) for f in faces) > 0.9
    astronaut = _real_photo("data/astronaut.png", "skimage")
    ip.draw_face(astronaut, 256, 256, 102.4, person=0)
    embeds = analyzer.embed_images([group, astronaut], policy="index", face_index=2)
    assert np.allclose(embeds.faces[0].bbox, boxes[2], atol=2)
    assert "3 faces found, picked face 2 from the left" in embeds.info[0]
    assert not any("Identity warning" in line for line in embeds.info)


# -- image formats -------------------------------------------------------------------------------------
def test_grayscale_rgba_float_and_huge_images_are_handled(analyzer):
    rgb = ip.face_image(person=0)
    reference = analyzer.embed_images([rgb]).faces[0]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for variant in (gray, gray[..., None], np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), rgb / 255.0):
        face = analyzer.embed_images([variant]).faces[0]
        assert np.allclose(face.bbox, reference.bbox)
    huge = np.full((3000, 4000, 3), 90, np.uint8)
    box = ip.draw_face(huge, 2000, 1500, 600)  # 4000 px wide -> 0.16 at 640: a 96 px face, found on retry if needed
    face = analyzer.embed_images([huge]).faces[0]
    assert iou(face.bbox, box) > 0.7


def test_bad_images_are_rejected_clearly(analyzer):
    with pytest.raises(fa.FaceImageError, match="image 1 of 1 .* only 10x10 px"):
        analyzer.embed_images([np.zeros((10, 10, 3), np.uint8)])
    batch = torch.rand(3, 64, 64, 3)
    batch[1, 5, 5, 0] = float("nan")
    with pytest.raises(fa.FaceImageError, match=r"image 2 of 3 \(batch index 1\) contains 1 NaN"):
        analyzer.embed_images(batch)
    with pytest.raises(fa.FaceImageError, match="empty batch"):
        analyzer.embed_images(torch.zeros(0, 64, 64, 3))
    with pytest.raises(fa.FaceImageError, match="is empty"):
        analyzer.embed_images(torch.zeros(1, 0, 64, 3))
    with pytest.raises(fa.FaceImageError, match="channels-first"):
        analyzer.embed_images([np.zeros((3, 64, 64), np.float32)])


# -- pack discovery and the failure modes of loading --------------------------------------------------
def test_missing_pack_names_the_folder_and_files_and_never_downloads(tmp_path, no_network, root):
    empty_root = tmp_path / "insightface"
    empty_root.mkdir()
    with pytest.raises(fa.FacePackError) as error:
        fa.FaceAnalyzer.load("antelopev2", [empty_root])
    message = str(error.value)
    assert str(empty_root / "models" / "antelopev2") in message
    for name in ip.ANTELOPEV2_FILES.values():
        assert name in message
    assert "never downloads" in message
    assert no_network == []
    # What we prevent: insightface's own FaceAnalysis tries to download a missing pack.
    from insightface.app import FaceAnalysis

    with pytest.raises(AssertionError, match="network access attempted"):
        FaceAnalysis("antelopev2", root=str(tmp_path / "elsewhere"))
    with pytest.raises(fa.FacePackError) as other:
        fa.FaceAnalyzer.load("my_pack", [root])
    assert "Packs that were found: antelopev2, buffalo_l" in str(other.value)


def test_pack_unpacked_one_level_too_deep_is_found_with_a_note(tmp_path, packs, no_network):
    nested_root = ip.insightface_root(tmp_path, {"antelopev2": packs["antelopev2"]}, nested={"antelopev2"})
    analyzer = fa.FaceAnalyzer.load("antelopev2", [nested_root], cache=False)
    assert analyzer.location.folder == nested_root / "models" / "antelopev2" / "antelopev2"
    assert any("one level too deep" in note for note in analyzer.notes)
    assert len(analyzer.detect(ip.face_image())) == 1
    assert "antelopev2" in fa.list_packs([nested_root])


def test_empty_pack_folder_and_missing_roles_are_named(tmp_path, packs, no_network):
    folder = tmp_path / "models" / "antelopev2"
    folder.mkdir(parents=True)
    with pytest.raises(fa.FacePackError) as empty:
        fa.FaceAnalyzer.load("antelopev2", [tmp_path], cache=False)
    assert f"{folder} exists but holds no .onnx files" in str(empty.value)
    for name in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx"):
        shutil.copy(packs["antelopev2"] / name, folder / name)
    with pytest.raises(fa.FacePackError) as no_roles:
        fa.FaceAnalyzer.load("antelopev2", [tmp_path], cache=False)
    message = str(no_roles.value)
    assert "has no face detector" in message and "and identity recognizer" in message
    assert "2d106det.onnx -> landmark_2d_106" in message and "scrfd_10g_bnkps.onnx" in message
    shutil.copy(packs["antelopev2"] / "scrfd_10g_bnkps.onnx", folder / "scrfd_10g_bnkps.onnx")
    with pytest.raises(fa.FacePackError) as no_recognizer:
        fa.FaceAnalyzer.load("antelopev2", [tmp_path], cache=False)
    assert "has no identity recognizer" in str(no_recognizer.value) and "face detector" not in str(no_recognizer.value)


def test_detector_without_keypoints_and_corrupt_files_are_named(tmp_path, packs):
    no_kps = ip.ensure_pack(ip.PackSpec("antelopev2", roles=("detection", "recognition"), detector_kps=False))
    with pytest.raises(fa.FacePackError, match="has no keypoint outputs"):
        fa.FaceAnalyzer.load(str(no_kps), cache=False)
    folder = tmp_path / "models" / "antelopev2"
    folder.mkdir(parents=True)
    for file in packs["antelopev2"].glob("*.onnx"):
        shutil.copy(file, folder / file.name)
    (folder / "glintr100.onnx").write_bytes((packs["antelopev2"] / "glintr100.onnx").read_bytes()[:5000])
    with pytest.raises(fa.FacePackError) as error:
        fa.FaceAnalyzer.load("antelopev2", [tmp_path], cache=False)
    assert f"Could not load {folder / 'glintr100.onnx'}" in str(error.value) and "corrupt or incomplete" in str(error.value)


def test_pack_selection_cache_and_fingerprint(root, analyzer):
    assert fa.list_packs([root]) == ["antelopev2", "buffalo_l"]
    buffalo = fa.FaceAnalyzer.load("buffalo_l", [root])
    assert buffalo.embedder == "insightface/buffalo_l/w600k_r50"
    assert fa.FaceAnalyzer.load("antelopev2", [root]) is analyzer
    assert fa.FaceAnalyzer.load("antelopev2", [root], det_size=320) is not analyzer
    assert fa.pack_fingerprint("antelopev2", [root]) != fa.pack_fingerprint("buffalo_l", [root])
    assert fa.pack_fingerprint("nothing", [root]).startswith("error: ")
    with pytest.raises(fa.FaceAnalysisError, match="multiple of 32"):
        fa.FaceAnalyzer.load("antelopev2", [root], det_size=500)


# -- execution providers and the onnxruntime install ------------------------------------------------
def test_the_report_names_the_provider_the_sessions_really_run_with(root, monkeypatch):
    """onnxruntime falls back to the CPU when CUDA cannot start, without an error. The analyzer
    reports what its sessions run with, and why CUDA was not used, never "on CUDA" by request."""
    monkeypatch.setattr(fa.providers, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    analyzer = fa.FaceAnalyzer.load("antelopev2", [root], provider="CUDA", cache=False)
    assert analyzer.providers[0] == "CUDAExecutionProvider"   # what was asked for
    assert analyzer.session_providers["recognition"][0] == "CPUExecutionProvider"
    assert analyzer.device == "CPU" and analyzer.describe().endswith("on CPU, detection size 640")
    note = next(n for n in analyzer.notes if "not CUDA" in n)
    assert "runs on CPU" in note and "could not start it" in note and "Fix:" in note, note
    # An onnxruntime without the provider at all gets that reason instead.
    why = fa.provider_fallback_note(["CUDAExecutionProvider", "CPUExecutionProvider"],
                                    {"recognition": ["CPUExecutionProvider"]}, available=["CPUExecutionProvider"])
    assert "has no CUDA provider" in why and "installed distributions" in why
    assert fa.provider_fallback_note(["CPUExecutionProvider"], {"recognition": ["CPUExecutionProvider"]}) is None


def test_only_available_providers_are_offered_and_unavailable_ones_fall_back_to_cpu():
    import onnxruntime

    available = onnxruntime.get_available_providers()
    choices = fa.provider_choices()
    assert choices[0] == "auto" and "CPU" in choices
    assert all(fa.PROVIDERS[c] in available for c in choices[1:])
    assert fa.provider_choices(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["auto", "CUDA", "CPU"]
    assert fa.resolve_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers, notes = fa.resolve_providers("CUDA", ["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and "'CUDA' is not available" in notes[0]


def _fake_distribution(site: Path, name: str, version: str = "1.31.1") -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_both_onnxruntime_distributions_or_no_gpu_provider_give_one_warning_and_cpu_still_runs(
        tmp_path, monkeypatch, root, caplog):
    assert fa.onnxruntime_warning(torch_cuda=False) is None  # this environment is clean
    _fake_distribution(tmp_path, "onnxruntime-gpu")  # as if `pip install onnxruntime-gpu` ran too
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fa.installed_onnxruntime_distributions() == ["onnxruntime", "onnxruntime-gpu"]
    warning = fa.onnxruntime_warning()
    assert "onnxruntime and onnxruntime-gpu are installed together" in warning
    assert "no GPU execution provider although torch sees a CUDA GPU" in warning
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in warning and "pip install onnxruntime-gpu" in warning
    with caplog.at_level("WARNING", logger="iad.face_analysis"):
        first = fa.FaceAnalyzer.load("antelopev2", [root], cache=False)
        second = fa.FaceAnalyzer.load("buffalo_l", [root], cache=False)
    assert [r.getMessage() for r in caplog.records].count(f"[IaD face analysis] {warning}") == 1
    assert warning in first.notes and warning in second.notes
    assert first.providers == ["CPUExecutionProvider"] and len(first.detect(ip.face_image())) == 1


# -- genuine antelopev2 weights (only when IAD_ANTELOPEV2_DIR points at them) -------------------------
ANTELOPEV2_DIR = os.environ.get("IAD_ANTELOPEV2_DIR")


@pytest.mark.real_weights
@pytest.mark.skipif(not ANTELOPEV2_DIR, reason="set IAD_ANTELOPEV2_DIR to a folder with the genuine antelopev2 .onnx files")
def test_genuine_antelopev2_on_real_photos():
    analyzer = fa.FaceAnalyzer.load(ANTELOPEV2_DIR, cache=False)
    assert analyzer.embedder == "insightface/antelopev2/glintr100"
    group = _real_photo("data/images/t1.jpg", "insightface")
    assert len(analyzer.detect(group)) == 6
    astronaut = _real_photo("data/astronaut.png", "skimage")
    faces = analyzer.detect(astronaut)
    assert len(faces) == 1 and faces[0].det_score > 0.7
    x1, y1, x2, y2 = faces[0].bbox.astype(int)
    tight = astronaut[max(y1, 0):y2, max(x1, 0):x2]  # the crop that fails without padding in peers
    embeds = analyzer.embed_images([astronaut, tight, cv2.resize(astronaut, (256, 256))])
    z = embeds.embeddings()
    assert float(z[0] @ z[1]) > 0.5 and float(z[0] @ z[2]) > 0.5
    assert not any("Identity warning" in line for line in embeds.info)
    other = analyzer.embed_images([astronaut, group], policy="largest")
    assert "Identity warning" in other.info[-1]
