"""Training throughput (samples/s) and peak memory of iad.train, side by side in one run.

CPU (default): the tiny Wan 2.1 T2V model (dim 128, 2 blocks) on a synthetic prepared dataset with
64x64x5-frame latents, batch 2: fp32 vs bf16, gradient checkpointing off vs on. Every
configuration runs in a fresh process (so peak memory is its own): peak RSS on the CPU.

GPU (``--gpu``): a Wan 2.1 1.3B-shaped model (dim 1536, 30 blocks, ffn 8960, random bf16 weights
generated in the real key layout) at a small resolution (256x256, 17 frames -> latents
[16, 5, 32, 32]), bf16, gradient checkpointing off vs on; peak memory = torch.cuda.max_memory_allocated.

    .venv/bin/python benchmarks/bench_train.py [--steps 40] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def synthetic_dataset(folder: Path, latent_shape: list[int], clips: int = 8, persons: int = 4, text_tokens: int = 24) -> Path:
    """A prepared dataset in iad.prepare's format with random latents (no VAE needed for timing)."""
    import torch

    from iad.prepare import load_prompt_bank
    from iad.prepare.encoders import HashTextEncoder
    from iad.prepare.shards import (DATASET_FILE, DATASET_FORMAT, FORMAT_VERSION, PROMPT_BANK_FILE, atomic_save_tensors,
                                    atomic_write_text, write_shard)

    if (folder / DATASET_FILE).is_file():
        return folder
    g = torch.Generator().manual_seed(0)
    text = HashTextEncoder()
    tensors, records = {}, []
    frames = 4 * (latent_shape[1] - 1) + 1
    for i in range(clips):
        person = i % persons
        centre = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(person)), dim=0)
        emb = torch.nn.functional.normalize(centre + 0.1 * torch.randn(12, 512, generator=g), dim=1)
        caption = f"a person doing action {i % 3}"
        t = {"latents": torch.randn(latent_shape, generator=g), "text": text(caption)[:text_tokens].half(),
             "action_text": text(f"action {i % 3}").mean(0), "track.frames": torch.arange(12),
             "track.bboxes": torch.tensor([[8.0, 8, 40, 40]]).repeat(12, 1), "track.kps": torch.zeros(12, 5, 2),
             "track.scores": torch.ones(12), "track.embeddings": emb, "track.landmarks": torch.zeros(12, 106, 2),
             "target.frames": torch.arange(frames), "target.bboxes": torch.tensor([[8.0, 8, 40, 40]]).repeat(frames, 1),
             "ref.frames": torch.arange(2), "ref.embeddings": emb[:2].clone(), "ref.crops": torch.zeros(2, 112, 112, 3, dtype=torch.uint8)}
        tensors.update({f"c{i}.{k}": v for k, v in t.items()})
        records.append({"key": f"c{i}", "source": f"clip{i}", "caption": caption, "action": f"action {i % 3}",
                        "person": f"p{person}", "primary_track": 0, "references": 2,
                        "text_tokens": int(t["text"].shape[0]), "window": [0, frames]})
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(folder, 0, tensors, records)
    prompts = load_prompt_bank()
    bank = {f"bank.{i}": text(p).half() for i, p in enumerate(prompts)}
    bank["null"] = text("").half()
    atomic_save_tensors(folder / PROMPT_BANK_FILE, bank, {"prompts": json.dumps(prompts)})
    atomic_write_text(folder / DATASET_FILE, json.dumps({
        "format": DATASET_FORMAT, "format_version": FORMAT_VERSION, "shards": ["shard-00000"], "skipped": [],
        "embedder": "insightface/antelopev2/glintr100", "latent_shape": latent_shape, "done": {}}))
    return folder


def one(args: argparse.Namespace) -> None:
    """Runs in its own process: one configuration, prints a JSON line."""
    import torch

    if args.device == "cpu":
        from harness.comfy_env import import_comfy

        import_comfy()
    from iad.train import run

    config = json.loads(args.one)
    result = run(config)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"samples_per_s": result.samples_per_second, "peak_rss": peak_rss,
                                  "peak_cuda": result.peak_memory_bytes,
                                  "loss_first": result.evals[0]["total"], "loss_last": result.evals[-1]["total"],
                                  "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu", action="store_true", help="Wan 1.3B-shaped model on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest for the tiny model)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)

    from harness import tiny_models as tiny
    from harness.train_data import TINY_ADAPTER

    work = Path(tempfile.mkdtemp(prefix="iad-bench-train-"))
    if args.gpu:
        spec = tiny.WanSpec("iad-bench-wan2.1-1.3B-shaped.safetensors", dim=1536, ffn_dim=8960, num_layers=30,
                            dtype="bfloat16", seed=5)
        base = tiny.ensure(spec)
        data = synthetic_dataset(work / "data", [16, 5, 32, 32])
        adapter = {"token_dim": 1536, "num_tokens": 16, "num_registers": 16}
        batch, device = 1, "cuda"
        variants = [("bf16, checkpointing off", {"precision": "bf16", "gradient_checkpointing": False}),
                    ("bf16, checkpointing on", {"precision": "bf16", "gradient_checkpointing": True})]
    else:
        base = tiny.ensure(tiny.WAN21_T2V)
        data = synthetic_dataset(work / "data", [16, 2, 8, 8])
        adapter, batch, device = dict(TINY_ADAPTER), 2, "cpu"
        variants = [("fp32, checkpointing off", {"precision": "fp32", "gradient_checkpointing": False}),
                    ("fp32, checkpointing on", {"precision": "fp32", "gradient_checkpointing": True}),
                    ("bf16, checkpointing off", {"precision": "bf16", "gradient_checkpointing": False}),
                    ("bf16, checkpointing on", {"precision": "bf16", "gradient_checkpointing": True})]
    rows = []
    for name, extra in variants:
        config = dict(base_model=str(base), data=str(data), output_dir=str(work / name.replace(", ", "-").replace(" ", "_")),
                      adapter=adapter, steps=args.steps, batch_size=batch, log_every=max(args.steps, 1),
                      checkpoint_every=10**6, resume=False, device=device, cpu_threads=args.threads if device == "cpu" else 0,
                      **extra)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if device == "cpu" else dict(os.environ)
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(config), "--device", device],
                              capture_output=True, text=True, env=env, cwd=REPO)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"{name}: failed\n{done.stderr[-3000:]}")
            continue
        rows.append((name, json.loads(line[0][7:])))
    if not rows:
        return
    ref = rows[0][1]
    what = "Wan 1.3B-shaped, 256x256x17 frames, batch 1, CUDA" if args.gpu else \
        f"tiny Wan (dim 128, 2 blocks), 64x64x5 frames, batch 2, CPU, {args.threads} thread(s)"
    print(f"\niad.train throughput, {what}, {args.steps} steps")
    print(f"{'configuration':28s} {'samples/s':>10s} {'vs first':>9s} {'peak RSS MB':>12s} {'peak CUDA MB':>13s} {'loss start -> end':>20s}")
    for name, r in rows:
        print(f"{name:28s} {r['samples_per_s']:10.2f} {r['samples_per_s'] / ref['samples_per_s']:8.2f}x "
              f"{r['peak_rss'] / 2**20:12.0f} {r['peak_cuda'] / 2**20:13.0f} {r['loss_first']:9.4f} -> {r['loss_last']:.4f}")


if __name__ == "__main__":
    main()
