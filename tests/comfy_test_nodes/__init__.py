"""Test-only ComfyUI nodes (never shipped to users, never registered by the pack itself).

The harness symlinks this folder into a test server's ``custom_nodes`` next to the pack.
umt5-xxl (Wan's text encoder) has a fixed 5B-parameter config, so no tiny real-format one can
exist; ``IaDTestWanConditioning`` stands in for ``CLIPLoader(type=wan)`` + ``CLIPTextEncode`` and
yields CONDITIONING of Wan's shape, ``[[tensor(1, L, 4096), {}]]``, deterministic per text.
"""

import hashlib

import torch
from comfy_api.v0_0_2 import ComfyExtension, io


def wan_conditioning_tensor(text: str, length: int, scale: float = 1.0) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, length, 4096, generator=generator) * scale


class IaDTestWanConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestWanConditioning",
            display_name="IaD Test: Wan Conditioning (test-only)",
            category="IaD/testing",
            description="TEST ONLY: deterministic Wan-shaped conditioning standing in for umt5-xxl.",
            inputs=[
                io.String.Input("text", default="", multiline=True, tooltip="Seeds the tensor: the same text gives the same conditioning."),
                io.Int.Input("length", default=16, min=1, max=512, tooltip="Number of text tokens L."),
                io.Float.Input("scale", default=1.0, min=0.0, max=100.0, tooltip="Multiplies the tensor."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, text: str, length: int, scale: float = 1.0) -> io.NodeOutput:
        return io.NodeOutput([[wan_conditioning_tensor(text, length, scale), {}]])


# -- IaD Apply tests (identity inputs without insightface, HunyuanVideo conditioning) -------------
def _iad_library():
    """The pack's torch-only library, imported as the top-level ``iad`` from the repository."""
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    import iad.face_types

    return iad.face_types


def test_face_embeds(seed: int, count: int, embedder: str = "insightface/antelopev2/glintr100"):
    """FACE_EMBEDS of one synthetic person: ``count`` unit 512-d embeddings near a seeded centre."""
    import numpy as np

    face_types = _iad_library()
    generator = torch.Generator().manual_seed(seed)
    centre = torch.nn.functional.normalize(torch.randn(512, generator=generator), dim=0)
    faces = []
    for i in range(count):
        embedding = torch.nn.functional.normalize(centre + 0.3 * torch.randn(512, generator=generator) / 512 ** 0.5, dim=0)
        faces.append(face_types.DetectedFace(image_index=i, bbox=np.array([0, 0, 64, 64], np.float32),
                                             kps=np.zeros((5, 2), np.float32), det_score=0.99, embedding=embedding))
    return face_types.FaceEmbeds(faces=faces, embedder=embedder, image_sizes=[(64, 64)] * count)


class IaDTestFaceEmbeds(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestFaceEmbeds",
            display_name="IaD Test: Face Embeds (test-only)",
            category="IaD/testing",
            description="TEST ONLY: deterministic FACE_EMBEDS of a synthetic person, no face model needed.",
            inputs=[
                io.Int.Input("seed", default=0, min=0, max=2**31, tooltip="Which synthetic person."),
                io.Int.Input("count", default=3, min=1, max=16, tooltip="Number of reference faces."),
                io.Combo.Input("embedder", options=["insightface/antelopev2/glintr100", "facexlib/irse50"],
                               optional=True, tooltip="Which recognizer the embeddings claim to come from (Lynx: IR-SE50)."),
            ],
            outputs=[io.Custom("FACE_EMBEDS").Output()],
        )

    @classmethod
    def execute(cls, seed: int, count: int, embedder: str | None = None) -> io.NodeOutput:
        return io.NodeOutput(test_face_embeds(seed, count, embedder or "insightface/antelopev2/glintr100"))


class IaDTestVideoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestVideoConditioning",
            display_name="IaD Test: LTX-Video / LTX-2 / HunyuanVideo (1.5) Conditioning (test-only)",
            category="IaD/testing",
            description="TEST ONLY: text tokens [1, L, 4096] plus what the family needs: the T5 attention mask "
                        "(LTX-Video), the CLIP-L pooled vector [1, 768] (HunyuanVideo), no pooled vector "
                        "(HunyuanVideo 1.5); LTX-2: [1, L, 128], the tiny model's text-feature width.",
            inputs=[
                io.Combo.Input("family", options=["ltxv", "ltx2", "hunyuan_video", "hunyuan_video15"],
                               tooltip="Which model family's extras to add."),
                io.String.Input("text", default="", multiline=True, tooltip="Seeds the tensors."),
                io.Int.Input("length", default=16, min=1, max=512, tooltip="Number of text tokens L."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, family: str, text: str, length: int) -> io.NodeOutput:
        if family == "ltx2":
            return io.NodeOutput([[wan_conditioning_tensor(text, length)[:, :, :128], {}]])
        if family == "ltxv":
            extra = {"attention_mask": torch.ones(1, length, dtype=torch.long)}
        elif family == "hunyuan_video15":
            extra = {"pooled_output": None}
        else:
            extra = {"pooled_output": wan_conditioning_tensor(text + "/pooled", 1, 1.0)[0, :, :768]}
        return io.NodeOutput([[wan_conditioning_tensor(text, length), extra]])


class IaDTestNodes(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .device_nodes import NODES as DEVICE_NODES
        from .variant_nodes import NODES as VARIANT_NODES

        return [IaDTestWanConditioning, IaDTestFaceEmbeds, IaDTestVideoConditioning, *VARIANT_NODES, *DEVICE_NODES]


async def comfy_entrypoint() -> IaDTestNodes:
    from .device_nodes import install_fake_devices

    install_fake_devices()   # only where the test server's environment asks for it (IAD_TEST_DEVICES)
    return IaDTestNodes()
