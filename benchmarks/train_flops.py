"""The arithmetic of docs/training.md, sections 4.3-4.7: training FLOPs per sample of a Wan adapter run, the
attention share, the rate the one GPU measurement achieved, and the two time models (planning and
upper bound) with the GPU-hours of each stage of the plan. Nothing is measured here: the measured
inputs are the arguments (the H200 run of ``bench_train.py --gpu``: 4.45 / 2.48 samples/s).

    python benchmarks/train_flops.py [--rate-off 4.45] [--rate-on 2.48] [--mfu 0.35]

FLOPs per block (multiply-adds x 2): linear ``L (6 d^2 + 2 d f) + 2 L 512 d + 2 * 512 d^2`` (q, k, v, o,
the cross-attention's q and o, the FFN; the cross-attention's scores against 512 text tokens; the
text K/V) and self-attention ``2 L^2 d``. With the base frozen, training costs 2x the forward for
linear layers (dX only) and 3.5x for flash attention; gradient checkpointing adds one forward.
"""

from __future__ import annotations

import argparse

TEXT_TOKENS = 512
L0 = 1280                      # 256x256x17: the measured point
SHAPES = {"1.3B": (1536, 8960, 30), "14B": (5120, 13824, 40)}   # d, ffn, blocks
TOKENS = {"D33": 14_040, "D81": 32_760}                           # 832x480, 33 / 81 frames
PEAK_TFLOPS = 989.0            # bf16 dense, H100 = H200 (NVIDIA datasheets)
PF = {False: 1.5, True: 1.42}  # prompt following (every 4: 2 no-grad + 1 grad call), without / with checkpointing
# the plan's stages: (table, model, data, samples, checkpointing)
STAGES = [("1.3B S1", "1.3B", "D33", 480_000, False), ("1.3B S2, H100", "1.3B", "D81", 48_000, True),
          ("1.3B S2, H200", "1.3B", "D81", 48_000, False), ("14B S1", "14B", "D33", 240_000, True),
          ("14B S1, H200 no ckpt", "14B", "D33", 240_000, False), ("14B S2", "14B", "D81", 32_000, True),
          ("A14B low-noise, D33", "14B", "D33", 64_000, True), ("A14B low-noise, D81", "14B", "D81", 16_000, True)]


def training_flops(model: str, tokens: int, checkpointing: bool) -> tuple[float, float]:
    """(TFLOPs of one training sample, attention's share of them)."""
    d, f, blocks = SHAPES[model]
    linear = tokens * (6 * d * d + 2 * d * f) + 2 * tokens * TEXT_TOKENS * d + 2 * TEXT_TOKENS * d * d
    attention = 2 * tokens * tokens * d
    extra = 1 if checkpointing else 0
    linear_t, attention_t = 2 * linear * blocks * (2 + extra), 2 * attention * blocks * (3.5 + extra)
    return (linear_t + attention_t) / 1e12, attention_t / (linear_t + attention_t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate-off", type=float, default=4.45, help="measured samples/s at L0, checkpointing off")
    parser.add_argument("--rate-on", type=float, default=2.48, help="measured samples/s at L0, checkpointing on")
    parser.add_argument("--mfu", type=float, default=0.35, help="model FLOP utilisation assumed at >= 14 K tokens")
    args = parser.parse_args(argv)
    if not all(0 < v < 1e6 for v in (args.rate_off, args.rate_on)) or not 0 < args.mfu <= 1:
        parser.error("rates must be positive samples/s and --mfu in (0, 1]")
    rate = {False: args.rate_off, True: args.rate_on}
    print("training FLOPs per sample (TF) and attention share")
    for model in SHAPES:
        for ckpt in (False, True):
            row = [f"{name} {training_flops(model, n, ckpt)[0]:,.0f} ({training_flops(model, n, ckpt)[1]:.1%})"
                   for name, n in (("L0", L0), *TOKENS.items())]
            print(f"  {model:5} ckpt {'on ' if ckpt else 'off'}: " + ", ".join(row))
    t_fix = {}
    for ckpt in (False, True):
        flops0, share0 = training_flops("1.3B", L0, ckpt)
        achieved = rate[ckpt] * flops0
        t_fix[ckpt] = 1 / rate[ckpt] - flops0 / (args.mfu * PEAK_TFLOPS)
        print(f"measured point, ckpt {'on' if ckpt else 'off'}: {flops0:.2f} TF a sample, attention a = {share0:.3f}, "
              f"achieved {achieved:.1f} TFLOP/s = {achieved / PEAK_TFLOPS:.1%} of {PEAK_TFLOPS:.0f}; "
              f"t_fix {t_fix[ckpt]:.3f} s at MFU {args.mfu:.0%}")

    def seconds(model: str, data: str, ckpt: bool) -> tuple[float, float]:
        """(planning, upper bound) seconds a sample without prompt following."""
        flops = training_flops(model, TOKENS[data], ckpt)[0]
        planning = t_fix[ckpt] + flops / (args.mfu * PEAK_TFLOPS)
        a, r = training_flops("1.3B", L0, ckpt)[1], TOKENS[data] / L0   # the 1.3B's time scaled with L, then by FLOPs
        scaled = (1 / rate[ckpt]) * ((1 - a) * r + a * r * r)
        return planning, scaled * flops / training_flops("1.3B", TOKENS[data], ckpt)[0]

    print("seconds a sample without prompt following: planning (upper bound)")
    for model in SHAPES:
        for data in TOKENS:
            print(f"  {model:5} {data}: " + ", ".join(
                f"ckpt {'on' if c else 'off'} {seconds(model, data, c)[0]:.2f} ({seconds(model, data, c)[1]:.1f})"
                for c in (False, True)))
    print("GPU-hours of each stage, prompt following included: planning / upper bound")
    for name, model, data, samples, ckpt in STAGES:
        planning, bound = (samples * s * PF[ckpt] / 3600 for s in seconds(model, data, ckpt))
        print(f"  {name:22} {samples:>8,} samples: {planning:6,.0f} / {bound:6,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
