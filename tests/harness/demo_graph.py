"""The demo graph that `make demo` runs (and a test runs too, so the demo cannot rot).

It is the synthetic portrait world's native ComfyUI graph (``synthworld/``, docs/synth-world.md):
a held-out person's reference photos (smiling, head turned) -> IaD Face Analysis Loader / Face Embed
(the world's insightface-format pack) -> IaD Identity -> IaD Apply on the world's tiny Wan T2V
(ComfyUI's own Wan architecture) -> KSampler -> frames, for naive injection and IaD side by side,
prompt "a person frowns at the beach". Real Wan/umt5/antelopev2 weights cannot exist here; the
world's models are small, trained from seeds and shipped in ``synthworld/assets``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO_ROOT

DEMO_PREFIX = "iad_demo"


@dataclass
class Demo:
    prompt: dict
    output_node: str            # SaveImage: IaD's frames of the world (first photo)
    video_node: str             # SaveAnimatedWEBP: the VAE-decoded videos, per photo a row [photo | naive | IaD]
    strip_node: str             # SaveImage: one PNG, per photo a naive and an IaD row (the photo, then the 9 frames)
    models: dict[str, dict[str, Path]]
    text: str


def prepare(base_dir: Path) -> Demo:
    """The demo prompt and the model files a server rooted at ``base_dir`` needs."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from synthworld import demo as synth_demo

    prompt, save_node = synth_demo.demo_prompt(filename_prefix=DEMO_PREFIX)
    return Demo(prompt=prompt, output_node=save_node, video_node=synth_demo.VIDEO_NODE, strip_node=synth_demo.STRIP_NODE,
                models=synth_demo.demo_models(),
                text=synth_demo.DEMO_TEXT)
