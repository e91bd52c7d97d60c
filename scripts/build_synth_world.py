"""Train every model of the synthetic portrait world and write them to synthworld/assets/world/.

    python scripts/build_synth_world.py            # the shipped world (about 1 h on 2 CPU cores)
    python scripts/build_synth_world.py --verify   # rebuild into a temporary folder and compare
                                                   # every file's SHA-256 with the shipped manifest
    python scripts/build_synth_world.py --smoke --out /tmp/w   # a 1-minute build of the pipeline
    python scripts/build_synth_world.py --vae-only # retrain only the Wan VAE (its own stage) in place
    python scripts/build_synth_world.py --scale gpu --out DIR   # the GPU-scale world (a CUDA GPU; its
                                                   # judges copied from the shipped world): `make gpu-world`
                                                   # builds it within its time budget and runs the experiment

Single-threaded (the VAE trains in a second single-threaded process) and seeded: the same software
stack reproduces the shipped files bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthworld import assets, build  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(assets.WORLD_DIR), help="output folder (default: the shipped assets)")
    parser.add_argument("--smoke", action="store_true", help="tiny pipeline check, not the published world "
                                                             "(the same as --scale smoke)")
    parser.add_argument("--scale", choices=sorted(build.SCALES), default=None,
                        help="full: the shipped CPU world (default); smoke: a pipeline check; gpu: the GPU-scale world "
                             "(wider, longer-trained Wan model on a CUDA GPU, the shipped world's judges); gpu-smoke: "
                             "gpu's layout on the CPU at a few steps. The manifest records it")
    parser.add_argument("--verify", action="store_true", help="rebuild in a temporary folder and compare hashes")
    parser.add_argument("--reuse-judges", default=None, metavar="DIR",
                        help="copy the classifier, detector and Wan VAE from an identical-scale build in DIR instead of "
                             "retraining them (every stage is seeded on its own, so the result is the same)")
    parser.add_argument("--resume-wan", nargs=2, default=None, metavar=("FILE", "CYCLES"),
                        help="continue the Wan model from FILE, the output of CYCLES training cycles of an "
                             "identical-scale build (equivalent to training those cycles again)")
    parser.add_argument("--adapter-overrides", default=None, metavar="JSON",
                        help='AdapterConfig fields for the adapters of a variant build, e.g. \'{"kv_rank": 16}\' '
                             "(recorded in the manifest; not the published world)")
    parser.add_argument("--scale-overrides", default=None, metavar="JSON",
                        help='BuildScale fields for a variant build, e.g. \'{"adapter_steps": 6000}\' (recorded in the '
                             "manifest's scale; not the published world)")
    parser.add_argument("--adapters", default="naive,iad", metavar="LIST",
                        help="which adapters to train (comma-separated: naive, iad); 'iad' alone copies the naive "
                             "systems from --reuse-judges (a variant build of the IaD adapter in half the time)")
    parser.add_argument("--vae-only", action="store_true",
                        help="retrain only the world's Wan VAE into --out (an existing build) and update its manifest; "
                             "the VAE stage depends only on the seeded render and the codec")
    args = parser.parse_args()
    if args.smoke and args.scale not in (None, "smoke"):
        parser.error("--smoke is --scale smoke: give one of them")
    scale_name = "smoke" if args.smoke else (args.scale or "full")
    scale = build.SCALES[scale_name]
    gpu_scale = scale_name in ("gpu", "gpu-smoke")
    if gpu_scale and (args.verify or args.vae_only or args.adapters != "naive,iad"):
        parser.error("--scale gpu / gpu-smoke builds the whole world once (no --verify, --vae-only or --adapters)")
    if args.scale_overrides:
        import dataclasses

        fields = json.loads(args.scale_overrides)
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        scale = dataclasses.replace(scale, **fields)
        scale_name += " with --scale-overrides"
    if args.vae_only:
        manifest = build.build_vae_only(args.out, scale)
        print(json.dumps({"wan vae s": manifest["timings_s"][build.VAE_TIMING], build.VAE_FILE: manifest["files"][build.VAE_FILE]}))
        return 0
    if args.verify:
        manifest = json.loads((assets.WORLD_DIR / "manifest.json").read_text())
        shipped = manifest["files"]
        running = build.comfyui_version()
        print(f"verifying with ComfyUI {running}" + (f"; the shipped world was built with {manifest['comfyui']}"
                                                      if manifest.get("comfyui") else ""))
        if manifest.get("comfyui") and manifest["comfyui"] != running:
            print("warning: the Wan VAE stage depends on the ComfyUI version (its WanVAE code): run this in the "
                  "shipped world's ComfyUI (scripts/lanes.py run <lane> -- ...)")
        cpu = build.cpu_kind()
        print(f"verifying on CPU {cpu}; the shipped world was built on "
              + (manifest["cpu"] if manifest.get("cpu") else "a CPU its manifest does not record (builds before 9)"))
        if manifest.get("cpu") != cpu:
            print("warning: every trained file depends on the CPU's float kernels (AVX2, AVX-512, AMX), so on "
                  "another CPU type the files differ in their last bits; bit-for-bit holds on the build's CPU type")
        with tempfile.TemporaryDirectory() as tmp:
            rebuilt = build.build_world(tmp, scale)["files"]
        bad = sorted(k for k in set(shipped) | set(rebuilt) if shipped.get(k) != rebuilt.get(k))
        for name in bad:
            print(f"DIFFERENT: {name} shipped {shipped.get(name)} rebuilt {rebuilt.get(name)}")
        print("bit-for-bit identical" if not bad else f"{len(bad)} files differ")
        return 1 if bad else 0
    if gpu_scale and Path(args.out).resolve() == assets.WORLD_DIR.resolve():
        parser.error(f"--scale {scale_name} never overwrites the shipped world: give --out DIR")
    if scale.device == "cuda" and not build.torch.cuda.is_available():
        parser.error(f"--scale {scale_name} trains on a CUDA GPU and none is visible here (its CPU version: "
                     "--scale gpu-smoke; on the GPU machine: make gpu-world, docs/gpu.md)")
    resume = (args.resume_wan[0], int(args.resume_wan[1])) if args.resume_wan else None
    overrides = json.loads(args.adapter_overrides) if args.adapter_overrides else None
    # the GPU-scale world keeps the shipped world's people, clips and judges (recognizer included)
    judges = args.reuse_judges or (str(assets.WORLD_DIR) if gpu_scale else None)
    manifest = build.build_world(args.out, scale, reuse_judges_from=judges, resume_wan_from=resume,
                                 adapter_overrides=overrides, reuse_recognizer=gpu_scale, scale_name=scale_name,
                                 adapters=tuple(a.strip() for a in args.adapters.split(",") if a.strip()))
    print(json.dumps({"total_s": manifest["total_s"], "timings_s": manifest["timings_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
