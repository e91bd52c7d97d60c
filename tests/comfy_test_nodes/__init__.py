"""Test-only ComfyUI nodes (never shipped to users, never registered by the pack itself).

The harness symlinks this folder into a test server's ``custom_nodes`` next to the pack.
umt5-xxl (Wan's text encoder) has a fixed 5B-parameter config, so no tiny real-format one can
exist; ``IaDTestWanConditioning`` stands in for ``CLIPLoader(type=wan)`` + ``CLIPTextEncode`` and
yields CONDITIONING of Wan's shape, ``[[tensor(1, L, 4096), {}]]``, deterministic per text.
"""

import hashlib

import torch
from comfy_api.latest import ComfyExtension, io


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


class IaDTestNodes(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [IaDTestWanConditioning]


async def comfy_entrypoint() -> IaDTestNodes:
    return IaDTestNodes()
