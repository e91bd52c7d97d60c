"""Face recognizers implemented in torch, as second embedding backends beside insightface's ONNX ArcFace.

Each backend embeds *aligned* face crops (the 5-point similarity alignment that insightface's
``face_align.norm_crop`` does) and names itself with an ``embedder`` string that adapter
checkpoints record, so a loader can refuse identity tokens computed from the wrong recognizer.
"""

from .irse50 import IRSE50_EMBEDDER, IRSE50Recognizer, analyzer_with_irse50, build_irse50, load_irse50

__all__ = ["IRSE50_EMBEDDER", "IRSE50Recognizer", "analyzer_with_irse50", "build_irse50", "load_irse50"]
