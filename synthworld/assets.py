"""Where the shipped, trained synthetic world lives, and what the demo needs from it."""

from __future__ import annotations

import json
from pathlib import Path

from . import build

WORLD_DIR = Path(__file__).resolve().parent / "assets" / "world"


class WorldNotBuiltError(FileNotFoundError):
    pass


def world_files(folder: Path = WORLD_DIR) -> dict[str, Path]:
    """Paths of the trained world artefacts, by the ComfyUI model folder they belong in:
    ``diffusion_models`` (tiny Wan T2V), ``vae`` (tiny Wan 2.1 VAE), ``iad`` (the three adapters), ``insightface`` (the pack
    folder, to place as ``models/insightface/models/synthworld``), plus the manifest."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise WorldNotBuiltError(f"the synthetic world is not built ({manifest} is missing): run "
                                 "`python scripts/build_synth_world.py`")
    files = {
        "diffusion_models": folder / build.WAN_FILE,
        "vae": folder / build.VAE_FILE,
        "iad_naive": folder / build.ADAPTER_FILES["naive"],
        "iad": folder / build.ADAPTER_FILES["iad"],
        "iad_naive_tf": folder / build.ADAPTER_FILES["naive_tf"],
        "insightface_pack": folder / build.PACK_NAME,
        "judges": folder / build.WORLD_FILE,
        "manifest": manifest,
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise WorldNotBuiltError(f"synthetic world files missing: {missing}; rebuild with scripts/build_synth_world.py")
    return files


def manifest(folder: Path = WORLD_DIR) -> dict:
    return json.loads((folder / "manifest.json").read_text())


PERSON_SEED = 424_242    # the demo's people: disjoint from the training identities (and the experiment's)


def heldout_person(index: int, folder: Path = WORLD_DIR):
    """The ``index``-th demo person: never among the identities the world's models were trained on."""
    from dataclasses import astuple

    from . import world

    scale = manifest(folder)["scale"]
    train = world.sample_identities(scale["train_identities"], seed=1000 + scale["seed"])
    return world.sample_identities(index + 1, seed=PERSON_SEED, exclude={astuple(i) for i in train})[index]
