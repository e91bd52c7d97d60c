"""insightface face analysis, without ComfyUI: pack discovery, role checks, execution providers,
detection with retries, face selection, batched identity embeddings, same-person check.

Used by the ComfyUI nodes (``nodes/face_nodes.py``), the evaluator and data preparation::

    analyzer = FaceAnalyzer.load("antelopev2", search_roots=["ComfyUI/models/insightface"])
    faces = analyzer.detect(rgb_uint8)                       # every face, best score first
    lynx = analyzer.with_detector_order("RGB")               # the detector reads RGB, as bytedance/lynx
    embeds = analyzer.embed_images([img1, img2], policy="largest")   # one face per image
    z = analyzer.embed_aligned(crops_112)                    # (N, 512), one batched call

One module per concern:

| module | concern |
|---|---|
| ``packs.py`` | finding pack folders (also nested one level too deep), routing each ONNX file, required roles |
| ``providers.py`` | onnxruntime execution providers and install problems |
| ``images.py`` | input images -> uint8 RGB/BGR, bad images refused by name |
| ``detection.py`` | the detector with its retries and input colour order, padded-detection rule, face selection, landmarks |
| ``alignment.py`` | the ArcFace alignment crop, the face mask |
| ``recognition.py`` | batched identity embeddings |
| ``report.py`` | errors, image names, the same-person check |
| ``analyzer.py`` | ``FaceAnalyzer``, which composes them, and the cache of loaded packs |

Each ONNX file is routed by insightface itself (``model_zoo.get_model`` on an existing file path),
so the shape rules are insightface's. Nothing is ever downloaded: ``FaceAnalysis(name, root)``
would try to fetch a missing pack, so it is never used. insightface, onnxruntime and cv2 are
imported lazily (this package must import without them).
"""

from .alignment import align_crop, face_mask
from .analyzer import FaceAnalyzer, clear_cache
from .detection import (DETECTOR_ORDERS, PADDED_MIN_INSIDE, RETRY_DET_SIZES, RETRY_PADDINGS, SELECTION_POLICIES, Candidate,
                        check_detector_order, detector_input)
from .images import MIN_IMAGE_PX, as_rgb_uint8, images_to_bgr_uint8, images_to_rgb_uint8
from .packs import (DEFAULT_PACK, KNOWN_PACK_FILES, LANDMARK_ROLES, REQUIRED_ROLES, ROLE_NAMES, PackLocation,
                    default_search_roots, list_packs, locate_pack, pack_fingerprint)
from .providers import (AUTO_PROVIDER_ORDER, ONNXRUNTIME_FIX, PROVIDERS, available_providers,
                        installed_onnxruntime_distributions, onnxruntime_warning, provider_choices,
                        provider_fallback_note, resolve_providers)
from .recognition import MAX_RECOGNIZER_BATCH
from .report import (SAME_PERSON_THRESHOLD, SMALL_FACE_PX, FaceAnalysisError, FaceImageError, FacePackError,
                     NoFaceError, same_person_warning, which_image)

__all__ = [
    "FaceAnalyzer", "clear_cache", "align_crop", "face_mask", "Candidate", "SELECTION_POLICIES", "PADDED_MIN_INSIDE",
    "DETECTOR_ORDERS", "check_detector_order", "detector_input",
    "RETRY_DET_SIZES", "RETRY_PADDINGS", "MIN_IMAGE_PX", "as_rgb_uint8", "images_to_bgr_uint8", "images_to_rgb_uint8",
    "DEFAULT_PACK", "KNOWN_PACK_FILES", "LANDMARK_ROLES", "REQUIRED_ROLES", "ROLE_NAMES", "PackLocation",
    "default_search_roots", "list_packs", "locate_pack", "pack_fingerprint", "AUTO_PROVIDER_ORDER", "ONNXRUNTIME_FIX",
    "PROVIDERS", "available_providers", "installed_onnxruntime_distributions", "onnxruntime_warning",
    "provider_choices", "provider_fallback_note", "resolve_providers", "MAX_RECOGNIZER_BATCH",
    "SAME_PERSON_THRESHOLD", "SMALL_FACE_PX", "FaceAnalysisError", "FaceImageError", "FacePackError", "NoFaceError",
    "same_person_warning", "which_image",
]
