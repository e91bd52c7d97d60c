"""Synthetic-world nodes: run the whole IaD pipeline natively on the shipped tiny world models.

Developer nodes: ComfyUI lists them only when ``IAD_DEVELOPER_NODES`` names this module
(``synthworld.nodes``), as the tests and ``make demo`` do; a user's menu never shows them.

The synthetic portrait world (synthworld/, docs/synth-world.md) has its own tiny Wan T2V model,
face pack and adapters, trained on procedurally rendered portrait videos. Three nodes connect it
to ComfyUI's native graph (Load Diffusion Model -> IaD Apply -> KSampler):

- IaD Synthetic-World Text Encode: the world's caption grammar -> Wan-shaped CONDITIONING
  (stands in for umt5-xxl, which the tiny world model does not use);
- IaD Synthetic-World Person: a reference photo of one of the world's people (held out from
  training), with the expression you choose;
- IaD Synthetic-World Decode: the world's exact latent codec -> IMAGE frames (VAE Decode with the world's
  Wan 2.1 VAE gives the same frames at 64x64, 33 frames).
"""

from __future__ import annotations

import logging

from ..nodes.comfy_api_compat import io
from . import assets, text as world_text, world
from .build import load_judges

log = logging.getLogger(__name__)
_CODEC = {}
LAYOUTS = ("frames", "strip")


def _codec():
    if "codec" not in _CODEC:
        try:
            files = assets.world_files()
        except assets.WorldNotBuiltError as exc:
            raise RuntimeError(f"IaD Synthetic-World Decode: {exc}") from exc
        _CODEC["codec"] = load_judges(files["judges"].parent)[0]
    return _CODEC["codec"]


class IaDSynthWorldTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDSynthWorldTextEncode",
            display_name="IaD Synthetic-World Text Encode",
            category="IaD/synthetic world",
            description="Encodes a caption of the synthetic portrait world (e.g. 'a person frowns at the beach') "
                        "into Wan-shaped conditioning [1, 8, 4096] for the world's tiny Wan model. "
                        "Only for the synthetic-world models: real Wan models need their umt5-xxl text encoder.",
            inputs=[
                io.String.Input("text", default="a person frowns at the beach", multiline=True,
                                tooltip="A caption in the world's grammar: 'a person [<appearance>] <action> <scene>'. "
                                        "Actions: " + ", ".join(world.ACTION_PHRASES.values()) + ". Scenes: "
                                        + ", ".join(world.SCENE_PHRASES.values()) + ". Optional appearance: "
                                        + ", ".join(world.APPEARANCE_PHRASES)
                                        + " (leave it out to take the look from the photo). Empty text = unconditional."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, text: str) -> io.NodeOutput:
        unknown = world_text.unknown_words(text)
        if unknown:
            log.warning("[ComfyUI-IaD] synthetic-world text: words outside the world's vocabulary are ignored: %s",
                        ", ".join(sorted(set(unknown))))
        return io.NodeOutput([[world_text.encode([text]), {}]])


class IaDSynthWorldPerson(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDSynthWorldPerson",
            display_name="IaD Synthetic-World Person",
            category="IaD/synthetic world",
            description="Renders a reference photo of one person of the synthetic world. People are drawn from a "
                        "seed disjoint from the training identities, so the models have never seen them.",
            inputs=[
                io.Int.Input("person", default=0, min=0, max=9999, tooltip="Which held-out person (any number)."),
                io.Combo.Input("expression", options=list(world.ACTIONS), default="smile",
                               tooltip="The expression in the photo: pick one the prompt does NOT ask for to see "
                                       "whether the video copies the photo or follows the prompt."),
                io.Int.Input("scale", default=4, min=1, max=16,
                             tooltip="Nearest-neighbour upscale of the 32x32 photo (for viewing; detection works at any scale)."),
            ],
            outputs=[io.Image.Output(display_name="photo")],
        )

    @classmethod
    def execute(cls, person: int, expression: str, scale: int = 4) -> io.NodeOutput:
        if expression not in world.ACTIONS:
            raise ValueError(f"IaD Synthetic-World Person: unknown expression '{expression}'; use one of {world.ACTIONS}.")
        try:
            identity = assets.heldout_person(person)
        except assets.WorldNotBuiltError as exc:
            raise RuntimeError(f"IaD Synthetic-World Person: {exc}") from exc
        clip = world.still(identity, expression)
        frame = world.render([identity], clip.params[:1], ["studio"])
        image = frame.permute(0, 2, 3, 1)
        if scale > 1:
            image = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        return io.NodeOutput(image.contiguous())


class IaDSynthWorldDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDSynthWorldDecode",
            display_name="IaD Synthetic-World Decode",
            category="IaD/synthetic world",
            description="Decodes a latent of the synthetic world's tiny Wan model into its 9 frames of 32x32 with the "
                        "world's exact latent codec (4x4 patch PCA), the decoder the experiment measures with. The "
                        "world's Wan 2.1 VAE (Load VAE + VAE Decode, as in the demo) decodes the same latent to a "
                        "64x64, 33-frame video. Make the latent with EmptyHunyuanLatentVideo at width = height = 64, "
                        "length 33.",
            inputs=[
                io.Latent.Input("samples", tooltip="The KSampler output of the synthetic-world Wan model."),
                io.Int.Input("scale", default=4, min=1, max=16, tooltip="Nearest-neighbour upscale of the 32x32 frames."),
                io.Combo.Input("layout", options=list(LAYOUTS), default="frames", optional=True,
                               tooltip="frames: one image per frame (a batch of 9 per video); strip: each video's 9 "
                                       "frames side by side in one image, left to right (for comparing videos at a glance)."),
            ],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, samples, scale: int = 4, layout: str = "frames") -> io.NodeOutput:
        if layout not in LAYOUTS:
            raise ValueError(f"IaD Synthetic-World Decode: unknown layout '{layout}'; use one of {LAYOUTS}.")
        import comfy.latent_formats

        latent = samples["samples"]
        if latent.dim() != 5 or latent.shape[1] != 16:
            raise ValueError(f"IaD Synthetic-World Decode: expected a Wan video latent [B, 16, T, H, W], got "
                             f"{tuple(latent.shape)}. Use EmptyHunyuanLatentVideo and the synthetic-world Wan model.")
        model_space = comfy.latent_formats.Wan21().process_in(latent.float().cpu())
        frames = _codec().decode(model_space)                      # [B, T, 3, H, W]
        if layout == "strip":       # [B, T, 3, H, W] -> B images [H, T*W]
            image = frames.permute(0, 3, 1, 4, 2).reshape(frames.shape[0], frames.shape[3], -1, 3)
        else:
            image = frames.reshape(-1, *frames.shape[2:]).permute(0, 2, 3, 1)
        if scale > 1:
            image = image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        return io.NodeOutput(image.contiguous())


NODES = [IaDSynthWorldTextEncode, IaDSynthWorldPerson, IaDSynthWorldDecode]
