"""IaD Apply overhead: step time of the patched vs the unpatched Wan model, side by side in one run.

    .venv/bin/python benchmarks/bench_apply.py              # CPU mid-size, plus the GPU shape if a GPU exists
    .venv/bin/python benchmarks/bench_apply.py --sizes cpu  # only the CPU mid-size model

Sizes:
- ``cpu``: a mid-size random Wan (dim 512, 8 blocks, ffn 2048) at 160x288, 5 frames (360 video tokens),
  fp32 on the CPU, identity in every block.
- ``gpu``: Wan 2.1 1.3B-shaped random weights (dim 1536, 30 blocks, ffn 8960) at 480x832, 81 frames
  (32760 video tokens), bf16 on the GPU, identity in every block. Runs only where CUDA exists.

Per size, the same seeded model call that one CFG sampler step makes (a cond+uncond batch, 512
text tokens, 16 identity tokens, sigma 0.5) runs with: the unpatched model; IaD active on every
step; IaD with a step range that never activates. The variants are interleaved call by call over
several rounds and the median (and min) step time is reported, with the ratio to unpatched, the theoretical FLOP ratio, and the adapter's
parameter memory relative to the base model (also for the Lynx reference layouts on Wan 14B).
Goals (issue 5): <= 5 % overhead on the CPU, <= 3 % on the GPU shape, 0 % outside the active range,
adapter memory <= 5 % of the base model's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402


@dataclass(frozen=True)
class Size:
    name: str
    dim: int
    ffn: int
    layers: int
    frames: int
    height: int
    width: int
    device: str
    dtype: torch.dtype
    rounds: int

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (1, 16, (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)

    @property
    def video_tokens(self) -> int:
        _, _, t, h, w = self.latent_shape
        return t * (h // 2) * (w // 2)


SIZES = {
    "cpu": Size("cpu mid-size Wan", 512, 2048, 8, 5, 160, 288, "cpu", torch.float32, rounds=12),
    "gpu": Size("Wan 2.1 1.3B shape", 1536, 8960, 30, 81, 480, 832, "cuda", torch.bfloat16, rounds=7),
}
TEXT_TOKENS = 512
ID_TOKENS = 16


def wan_flops_per_block(L: int, T: int, d: int, ffn: int) -> float:
    """Multiply-adds x2 of one Wan block on L video tokens with T text tokens."""
    self_attn = 4 * 2 * L * d * d + 2 * 2 * L * L * d
    cross = 2 * 2 * L * d * d + 2 * 2 * T * d * d + 2 * 2 * L * T * d
    mlp = 2 * 2 * L * d * ffn
    return self_attn + cross + mlp


def identity_flops_per_block(L: int, n_id: int, d: int) -> float:
    return 2 * 2 * L * n_id * d  # q @ K_id^T and attn @ V_id (K/V are computed once, not per step)


def adapter_config(model_dim: int, blocks: list[int], **overrides):
    AdapterConfig = af.module("iad.adapter").AdapterConfig
    base = dict(family="wan2.1", model_dim=model_dim, token_dim=min(model_dim, 1024), blocks=blocks, num_tokens=ID_TOKENS,
                num_registers=0, kv_bias=False, resampler_dim=512, resampler_depth=2, resampler_heads=8,
                resampler_dim_head=64, name="bench adapter")
    return AdapterConfig(**{**base, **overrides})


def param_bytes_on_meta(build) -> int:
    with torch.device("meta"):
        module = build()
    return sum(p.numel() * p.element_size() for p in module.parameters())


def wan_param_count(dim: int, ffn: int, layers: int) -> int:
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        model = WanModel(dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=layers, operations=comfy.ops.disable_weight_init)
    return sum(p.numel() for p in model.parameters())


def memory_table() -> list[tuple[str, int, int]]:
    """(layout, adapter parameters, base parameters)."""
    IdentityAdapter, AdapterConfig = af.module("iad.adapter").IdentityAdapter, af.module("iad.adapter").AdapterConfig
    rows = []

    def count(config):
        with torch.device("meta"):
            return sum(p.numel() for p in IdentityAdapter(config).parameters())

    base14 = wan_param_count(5120, 13824, 40)
    base13 = wan_param_count(1536, 8960, 30)
    rows.append(("Lynx lite layout on Wan 14B", count(AdapterConfig.lynx_lite()), base14))
    rows.append(("Lynx full layout on Wan 14B", count(AdapterConfig.lynx_full()), base14))
    rows.append(("bench adapter (all 30 blocks) on Wan 1.3B", count(adapter_config(1536, list(range(30)))), base13))
    rows.append(("bench adapter (every 2nd block) on Wan 1.3B", count(adapter_config(1536, list(range(0, 30, 2)))), base13))
    cpu = SIZES["cpu"]
    rows.append(("bench adapter on the CPU mid-size Wan", count(adapter_config(cpu.dim, list(range(cpu.layers)))),
                 wan_param_count(cpu.dim, cpu.ffn, cpu.layers)))
    return rows


def load_random_wan(size: Size):
    import comfy.sd

    spec = tiny.WanSpec("bench.safetensors", dim=size.dim, ffn_dim=size.ffn, num_layers=size.layers, seed=11)
    state = tiny.build_wan_state_dict(spec)
    options = {} if size.dtype == torch.float32 else {"dtype": size.dtype}
    return comfy.sd.load_diffusion_model_state_dict(state, model_options=options)


def run_size(size: Size) -> dict:
    """Times one model call per step (cond+uncond batch, what a CFG sampler step costs), the variants
    interleaved call by call in a shuffled order, so load drift hits all of them alike."""
    import random

    import comfy.model_management as mm

    device = mm.get_torch_device()
    model = load_random_wan(size)
    config = adapter_config(size.dim, list(range(size.layers)))
    adapter = af.module("iad.adapter").IdentityAdapter.random(config, seed=0)
    variants = af.overhead_variants(model, adapter)
    g = torch.Generator().manual_seed(0)
    dtype = model.model.get_dtype() if size.dtype != torch.float32 else torch.float32
    context = torch.randn(2, TEXT_TOKENS, 4096, generator=g).to(device, dtype)
    x = torch.randn(2, *size.latent_shape[1:], generator=g).to(device, dtype)
    sigma = torch.full((2,), 0.5, device=device)  # mid-denoising: inside [0, 1], outside [0.999, 1]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # On the CPU: one torch thread and this thread's CPU time, so other processes sharing the
    # cores do not show up as overhead (wall time is reported beside it).
    cpu_clock = device.type == "cpu"
    if cpu_clock:
        torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    order = list(variants)
    rng = random.Random(0)
    for round_index in range(size.rounds + 1):  # round 0 warms up (loading, allocator, kernels)
        rng.shuffle(order)
        for name in order:
            m = variants[name]
            mm.load_models_gpu([m])
            options = dict(m.model_options["transformer_options"], sigmas=sigma, cond_or_uncond=[0, 1])
            sync()
            start, start_cpu = time.perf_counter(), time.thread_time()
            out = m.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
            sync()
            if round_index > 0:
                wall = time.perf_counter() - start
                walls[name].append(wall)
                times[name].append(time.thread_time() - start_cpu if cpu_clock else wall)
            outputs[name] = out.float().cpu()
    mm.unload_all_models()
    medians = {k: statistics.median(v) for k, v in times.items()}
    L, d = size.video_tokens, size.dim
    flop_ratio = identity_flops_per_block(L, ID_TOKENS + config.num_registers, d) / wan_flops_per_block(L, TEXT_TOKENS, d, size.ffn)
    adapter_bytes = sum(p.numel() * p.element_size() for p in adapter.parameters())
    base_bytes = sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())
    return {
        "size": size, "medians": medians, "mins": {k: min(v) for k, v in times.items()}, "flop_ratio": flop_ratio,
        "wall_medians": {k: statistics.median(v) for k, v in walls.items()},
        "clock": "thread CPU time, 1 torch thread" if cpu_clock else "wall time (synchronised)",
        "inactive_identical": torch.equal(outputs["unpatched"], outputs["IaD, range never active"]),
        "active_differs": not torch.equal(outputs["unpatched"], outputs["IaD active every step"]),
        "adapter_bytes": adapter_bytes, "base_bytes": base_bytes,
    }


def report(result: dict) -> None:
    size, medians = result["size"], result["medians"]
    base = medians["unpatched"]
    print(f"\n== {size.name}: dim {size.dim}, {size.layers} blocks, {size.video_tokens} video tokens, "
          f"{TEXT_TOKENS} text + {ID_TOKENS} identity tokens, {str(size.dtype).replace('torch.', '')} on {size.device}, "
          f"{size.rounds} interleaved model calls (= CFG steps) per variant")
    mins, walls = result["mins"], result["wall_medians"]
    print(f"clock: {result['clock']}")
    print(f"{'variant':26s} {'median step (s)':>15s} {'ratio':>7s} {'min (s)':>9s} {'ratio':>7s} {'wall median (s)':>16s} {'ratio':>7s}")
    for name, value in medians.items():
        print(f"{name:26s} {value:15.4f} {value / base:6.3f}x {mins[name]:9.4f} {mins[name] / mins['unpatched']:6.3f}x "
              f"{walls[name]:16.4f} {walls[name] / walls['unpatched']:6.3f}x")
    print(f"theoretical FLOP ratio of the identity attention: +{100 * result['flop_ratio']:.3f} % "
          f"(measured active: {100 * (medians['IaD active every step'] / base - 1):+.2f} %, "
          f"never-active range: {100 * (medians['IaD, range never active'] / base - 1):+.2f} %)")
    print(f"never-active range output bit-identical to unpatched: {result['inactive_identical']}; "
          f"active output differs: {result['active_differs']}")
    print(f"adapter parameters {result['adapter_bytes'] / 2**20:.1f} MiB vs base {result['base_bytes'] / 2**20:.1f} MiB "
          f"= {100 * result['adapter_bytes'] / result['base_bytes']:.2f} %")


def import_comfy(gpu: bool) -> None:
    """ComfyUI in-process: CPU-only (like the tests) unless ``gpu``. ComfyUI reads its device
    settings once at import, so each size runs in its own process."""
    from harness.comfy_env import import_comfy as import_comfy_cpu
    from harness.paths import CACHE_DIR, comfyui_dir

    if gpu:
        sys.path.insert(0, str(comfyui_dir()))
        import comfy.options  # noqa: F401
        import comfy.cli_args

        comfy.cli_args.args.base_directory = str(CACHE_DIR / "inprocess-comfy")
        import comfy.model_management  # noqa: F401  (picks the GPU)
    import_comfy_cpu()
    af.pack()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["cpu", "gpu"])
    parser.add_argument("--no-memory-table", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if len(args.sizes) > 1:
        import subprocess

        import_comfy(gpu=False)
        print_memory_table()
        for key in args.sizes:
            subprocess.run([sys.executable, __file__, "--sizes", key, "--no-memory-table"], check=True)
        return
    key = args.sizes[0]
    size = SIZES[key]
    if size.device == "cuda" and not torch.cuda.is_available():
        print(f"\n== {size.name}: no CUDA device here; this size runs where a GPU is available.")
        return
    import_comfy(gpu=size.device == "cuda")
    if not args.no_memory_table:
        print_memory_table()
    report(run_size(size))


def print_memory_table() -> None:
    print("adapter parameter memory vs base model (parameter counts, any dtype):")
    for layout, adapter_params, base_params in memory_table():
        print(f"  {layout:46s} {adapter_params / 1e6:9.1f} M / {base_params / 1e6:9.1f} M = {100 * adapter_params / base_params:5.2f} %")


if __name__ == "__main__":
    main()
