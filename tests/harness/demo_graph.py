"""The demo graph that `make demo` runs (and a test runs too, so the demo cannot rot)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import prompts
from . import tiny_models as tiny


@dataclass
class Demo:
    prompt: dict
    output_node: str
    models: dict[str, dict[str, Path]]


def prepare(base_dir: Path) -> Demo:
    """Generate/reuse the tiny models and build the demo prompt for a server rooted at base_dir."""
    paths = tiny.ensure_all()
    models = {
        "diffusion_models": {tiny.WAN21_T2V.filename: paths[tiny.WAN21_T2V.filename]},
        "vae": {tiny.WAN21_VAE.filename: paths[tiny.WAN21_VAE.filename]},
    }
    prompt, nodes = prompts.wan_t2v(
        tiny.WAN21_T2V.filename, tiny.WAN21_VAE.filename, text="a person smiles, then turns left",
        width=64, height=64, length=9, steps=4, filename_prefix="iad_demo",
    )
    return Demo(prompt=prompt, output_node=nodes["save"], models=models)
