"""The face detector's input colour order (issue 34: Lynx exactly as released).

bytedance/lynx hands insightface's FaceAnalysis (buffalo_l, det_size 640) ``np.array`` of a PIL RGB
image, which the detector reads as BGR. ``FaceAnalyzer.with_detector_order("RGB")`` (the loader's
'RGB (as Lynx's pipeline)') reproduces that; the default stays insightface's BGR, bit for bit.
In process on generated insightface-format packs: one whose detector sees only brightness (any
order detects alike) and one whose detector sees only red (the order decides what it finds). Then
every shipped workflow: the face analysis that feeds Lynx's parts detects as Lynx does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from harness import insightface_pack as ip
from iad import face_analysis as fa
from test_lynx_ref import _graphs, _source

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture(scope="module")
def red(tmp_path_factory) -> fa.FaceAnalyzer:
    """buffalo_l whose detector weighs only the red channel of what insightface hands it."""
    root = ip.insightface_root(tmp_path_factory.mktemp("insightface"), {"buffalo_l": ip.ensure_pack(ip.BUFFALO_L_RED_DETECTOR)})
    return fa.FaceAnalyzer.load("buffalo_l", [root])


class DetectorSpy:
    """The real detector, recording each image it is handed."""

    def __init__(self, detector):
        self.detector, self.seen = detector, []

    def detect(self, image, **kwargs):
        self.seen.append(np.array(image, copy=True))
        return self.detector.detect(image, **kwargs)


def spied(analyzer: fa.FaceAnalyzer) -> tuple[fa.FaceAnalyzer, DetectorSpy]:
    twin = copy.copy(analyzer)   # the cached analyzer itself stays untouched
    twin.detector = DetectorSpy(analyzer.detector)
    return twin, twin.detector


def two_coloured_faces() -> np.ndarray:
    """A large red face (its red channel bright, its blue as dark as the ring) at the left and a
    smaller grey one at the right: in BGR the red detector sees both, in RGB only the grey one."""
    image = np.full((640, 640, 3), 90, np.uint8)
    ip.draw_face(image, 192, 320, 128, colour=(200, 20, 12))
    ip.draw_face(image, 480, 320, 64, colour=(180, 180, 180))
    return image


def grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(image.mean(-1, keepdims=True).round().astype(np.uint8), 3, axis=-1)


def test_rgb_order_hands_the_detector_the_photo_with_its_channels_reversed(red):
    photo = two_coloured_faces()
    default, seen_default = spied(red)
    lynx, seen_lynx = spied(red.with_detector_order("RGB"))
    default.embed_images([photo], retry=False)
    lynx.embed_images([photo], retry=False)
    assert len(seen_default.seen) == len(seen_lynx.seen) == 1
    assert np.array_equal(seen_default.seen[0], photo[..., ::-1])   # insightface's BGR, as always
    assert np.array_equal(seen_lynx.seen[0], photo)                 # Lynx: the RGB array itself


def test_a_photo_whose_colour_matters_gives_other_faces_and_crops_come_from_the_photo(red):
    photo = two_coloured_faces()
    bgr = red.embed_images([photo], policy="largest")
    rgb = red.with_detector_order("RGB").embed_images([photo], policy="largest")
    assert bgr.faces[0].bbox.tolist() == [128.0, 256.0, 256.0, 384.0]   # the large red face
    assert rgb.faces[0].bbox.tolist() == [448.0, 288.0, 512.0, 352.0]   # red is invisible: the grey one
    assert np.abs(bgr.faces[0].kps - rgb.faces[0].kps).max() > 100
    # Only the detector's input changed: the crop is the photo aligned on the keypoints found, and
    # the embedding that crop's, exactly as in BGR order.
    for embeds in (bgr, rgb):
        face = embeds.faces[0]
        crop = fa.align_crop(photo, face.kps, red.crop_size)
        assert np.array_equal(face.aligned_crop, crop)
        assert np.array_equal(face.embedding.numpy(), red.embed_aligned([crop])[0].numpy())
    # Scores differ too where both orders find the face.
    both = [red.with_detector_order(o).detect(photo, retry=False) for o in ("BGR", "RGB")]
    assert [round(f.det_score, 3) for f in both[0]] == [0.977, 0.975] and [round(f.det_score, 3) for f in both[1]] == [0.975]


def test_a_grey_photo_gives_identical_results_in_both_orders(red):
    photo = grey(two_coloured_faces())
    bgr = red.detect(photo)
    rgb = red.with_detector_order("RGB").detect(photo)
    assert len(bgr) == len(rgb) == 2
    for a, b in zip(bgr, rgb):
        assert a.det_score == b.det_score and np.array_equal(a.bbox, b.bbox) and np.array_equal(a.kps, b.kps)
        assert np.array_equal(a.aligned_crop, b.aligned_crop) and np.array_equal(a.embedding.numpy(), b.embedding.numpy())
        assert a.landmark_2d_106 is not None and a.landmark_3d_68 is not None
        for field in ("landmark_2d_106", "landmark_3d_68", "pose"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_the_default_is_insightfaces_bgr_unchanged_and_each_order_is_cached_apart(red):
    roots = [red.location.folder.parents[1]]
    default = fa.FaceAnalyzer.load("buffalo_l", roots)
    assert default is red and default.detector_order == "BGR"
    assert fa.FaceAnalyzer.load("buffalo_l", roots, detector_order="BGR") is red
    assert "detector input" not in red.describe()
    lynx = fa.FaceAnalyzer.load("buffalo_l", roots, detector_order="RGB")
    assert lynx is not red and lynx.detector_order == "RGB" and red.detector_order == "BGR"
    assert fa.FaceAnalyzer.load("buffalo_l", roots, detector_order="RGB") is lynx   # cached per order
    assert lynx.detector is red.detector and lynx.recognizer is red.recognizer        # one set of sessions
    assert lynx.describe().endswith("detection size 640, detector input RGB (as Lynx's pipeline)")
    assert lynx.with_detector_order("BGR").detector_order == "BGR" and red.with_detector_order("BGR") is red
    # Uncached loads honour the order too.
    assert fa.FaceAnalyzer.load("buffalo_l", roots, cache=False, detector_order="RGB").detector_order == "RGB"
    # The IR-SE50 twin Lynx's embedder makes keeps the order it was given.
    from iad.recognizers.irse50 import IRSE50Recognizer, analyzer_with_irse50, build_irse50

    twin = analyzer_with_irse50(lynx, IRSE50Recognizer(build_irse50().eval()))
    assert twin.detector_order == "RGB" and "detector input RGB" in twin.describe()


def test_default_detection_equals_insightfaces_own_bgr_call(red):
    """Bit-identical to before: the default hands the detector exactly the BGR photo (what
    insightface's own FaceAnalysis.get takes) and keeps what it returns."""
    photo = two_coloured_faces()
    bboxes, kpss = red.detector.detect(np.ascontiguousarray(photo[..., ::-1]), input_size=(640, 640), det_thresh=0.5)
    faces = red.detect(photo, retry=False)
    order = np.argsort(-bboxes[:, 4])
    assert [f.det_score for f in faces] == [float(s) for s in bboxes[order, 4]]
    assert all(np.array_equal(f.kps, k.astype(np.float32)) for f, k in zip(faces, kpss[order]))


def test_an_unknown_order_is_refused_by_name(red):
    with pytest.raises(fa.FaceAnalysisError, match=r"Unknown detector colour order 'rgb': use 'BGR'.*or 'RGB'"):
        red.with_detector_order("rgb")
    with pytest.raises(fa.FaceAnalysisError, match="Unknown detector colour order"):
        fa.FaceAnalyzer.load("buffalo_l", [red.location.folder.parents[1]], detector_order="BRG")


# -- the shipped workflows ----------------------------------------------------------------------------
LYNX_PARTS = {"IaDIRSE50FaceEmbedder", "IaDLynxRefAdapter"}   # what reads a face analysis for Lynx
LYNX_DETECTION = ["buffalo_l", "auto", 640, "RGB (as Lynx's pipeline)"]
IAD_DETECTION = ["antelopev2", "auto", 640, "BGR (insightface's convention)"]


def face_analysis_uses() -> list[tuple[str, dict, set[str]]]:
    """(workflow, loader node, the types its analysis feeds) for every IaD Face Analysis Loader of every
    shipped workflow, top level or in a subgraph, followed through links and Reroutes."""
    uses = []
    for path in sorted(WORKFLOWS_DIR.glob("*.json")):
        for nodes, links in _graphs(json.loads(path.read_text())):
            fed: dict[int, set[str]] = {}
            for node in nodes.values():
                if any(i["name"] == "face_analysis" for i in node.get("inputs", [])):
                    source = _source(nodes, links, node, "face_analysis")
                    if source is not None and source["type"] == "IaDFaceAnalysisLoader":
                        fed.setdefault(source["id"], set()).add(node["type"])
            uses += [(path.name, n, fed.get(n["id"], set())) for n in nodes.values() if n["type"] == "IaDFaceAnalysisLoader"]
    return uses


def test_lynx_parts_get_lynxs_detection_and_iad_adapters_keep_antelopev2():
    """Every face analysis that feeds Lynx's IR-SE50 embedder or ref-adapter detects as bytedance/lynx
    (buffalo_l, det_size 640, the detector handed RGB); every one that feeds an IaD adapter's embedding
    (IaD Face Embed straight from the loader: antelopev2 ArcFace, what IaD adapters are trained on)
    keeps antelopev2 in insightface's BGR; none feeds both."""
    uses = face_analysis_uses()
    lynx = {name for name, _, fed in uses if fed & LYNX_PARTS}
    assert lynx == {p.name for p in WORKFLOWS_DIR.glob("*lynx*.json")}, lynx
    for name, loader, fed in uses:
        assert fed, (name, loader["id"], "feeds nothing")
        if fed & LYNX_PARTS:
            assert not fed - LYNX_PARTS, (name, fed)   # IaD Face Embed reads the IR-SE50 twin, not the loader
            assert loader["widgets_values"] == LYNX_DETECTION, (name, loader["widgets_values"])
        else:
            assert loader["widgets_values"] == IAD_DETECTION, (name, loader["widgets_values"])
