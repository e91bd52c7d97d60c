"""IaD Apply with ComfyUI's context windows: time and memory per window at 1, 2 and 4 windows, with
and without the identity, side by side in one run, on the CPU (issue 32: "memory and time stay flat in
the number of windows; identity costs the same per window as in one pass").

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_context_windows.py
    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_context_windows.py --blocks 30

Runtime on a 2-core AMD EPYC (AVX2), one core used: about 8 minutes with the default 6-block slice;
``--blocks 30`` (the whole 1.3B, 5.7 GB of fp32 weights, peak RSS 8.7 GiB) took 50 minutes with other
work on the other core (time grows with blocks x rounds; ``--rounds`` sets the timed rounds, 12 by default).

The model is ComfyUI's own ``WanModel`` at the Wan 2.1 T2V 1.3B layout (width 1536, 12 heads of 128,
feed-forward 8960), loaded through ComfyUI's loader (which must detect WAN21_T2V) from random weights,
fp32 on the CPU. By default it is a slice: blocks 0-5 of the 30 (``--blocks 30`` runs the whole model).
The identity acts per block, so a slice keeps each block's identity share; only the model's fixed
parts (text and time embeddings, head) weigh a little more. The adapter patches every block of the
slice (16 identity tokens, token width 1024); IaD Apply sits after ``WanContextWindowsManual``.

The windows are core's: ``WanContextWindowsManual`` (comfy_extras) with context_length 13 video frames
(4 latent frames) and context_overlap 8 (2 latent frames), the ``standard_static`` schedule (the same
windows at every step), pyramid fusion, FreeNoise off, core's other defaults. Latents of 4, 6 and 10
latent frames of 8x8 (13, 21 and 37 video frames at 64x64) give exactly 1 (core then samples in one
pass), 2 and 4 windows; core prepends the frame before each later window (``causal_window_fix``), so
those model calls see 5 frames. 128 text tokens (Wan's encoder gives 512: fewer is the conservative
case, the identity's share is larger).

One CFG step is ComfyUI's own sampler (``comfy.sample.sample``, euler, 1 step, cfg 5, cond and uncond
batched in each window): the sampler's ``calc_cond_batch`` hands it to the windows handler, which
calls the model once per window and fuses the windows. For each window count the step runs with: the
windows alone; the windows with IaD active in every step (its own IaD Apply per count, start 0, end 1,
no identity on the uncond rows: the node's default); the windows alone once more as an A/A control (the
run's noise floor). Each is its own ModelPatcher clone. In every round the three window counts come in
a shuffled order, and each count's three variants back to back in a shuffled order; round 0 warms up.
Time: this thread's CPU time (one torch thread) of the step's noise prediction (core's PREDICT_NOISE
wrapper: all windows and their fusion), per step, per window and per latent frame of the model calls.
The identity's overhead is paired by round (+ IaD over the mean of the two steps without it, right
beside it), the median over the rounds with its quartiles; the A/A control the same way.

Memory, after the timed rounds: (1) what the identity holds, read from the patch objects of each
count's IaD Apply: the identity tokens and the K/V cache of every block (and the adapter's weights,
loaded once); (2) what a step allocates: torch's CPU allocations over one step, from the profiler's
memory events (every tensor allocation and free, in order), their peak above what was allocated before
the step and what is still allocated at its end, for the windows alone and with IaD, twice each.

Also checked in the same run: the model ran once per window per step, cond and uncond batched; the
A/A output is bit-identical to the windows alone and the identity changes it; the identity tokens were
computed once (by IaD Identity, before sampling; the adapter's resampler never runs while sampling)
and each block's identity K/V once per IaD Apply, at every window count, however many steps ran.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402

WIDTH, HEADS, FFN, LAYERS = 1536, 12, 8960, 30      # Wan 2.1 T2V 1.3B
BLOCKS = 6                                          # the default slice
ID_TOKENS = 16
TEXT_TOKENS = 128
HEIGHT = WIDTH_LATENT = 8                           # latent pixels: 64x64 video, 4x4 = 16 tokens per frame
WINDOW_FRAMES, OVERLAP_FRAMES = 13, 8               # video frames: 4 latent frames, 2 overlapping
COUNTS = {1: 4, 2: 6, 4: 10}                        # windows: latent frames
ROUNDS = 12
MEMORY_REPEATS = 2
VARIANTS = ("windows alone", "windows + IaD", "windows alone again (A/A)")


class Recorder:
    """Which variant runs now, and what each model call and step cost it."""

    def __init__(self):
        self.key = None
        self.calls: dict = {}       # key -> [(batch, frames, window index list, anchor)]
        self.steps: dict = {}       # key -> [thread seconds of the step's noise prediction]
        self.kv: dict = {}          # IaD key -> identity K/V projections
        self.resampler = 0

    def predict_noise(self, executor, *args, **kwargs):
        start = time.thread_time()
        out = executor(*args, **kwargs)
        self.steps.setdefault(self.key, []).append(time.thread_time() - start)
        return out

    def model_call(self, module, args, kwargs):
        x = args[0]
        window = kwargs.get("transformer_options", {}).get("context_window")
        index_list = None if window is None else list(window.index_list)
        anchor = None if window is None else getattr(window, "causal_anchor_index", None)
        self.calls.setdefault(self.key, []).append((x.shape[0], x.shape[2], index_list, anchor))

    def kv_call(self, *_):
        self.kv[self.key] = self.kv.get(self.key, 0) + 1


def build_model(blocks: int):
    """ComfyUI's WanModel at the 1.3B layout, ``blocks`` blocks, through ComfyUI's loader. The random
    weights are made in bf16 and loaded as fp32, so that the model exists once in fp32."""
    import comfy.ops
    import comfy.sd
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        shapes = WanModel(model_type="t2v", in_dim=16, dim=WIDTH, ffn_dim=FFN, out_dim=16, num_heads=HEADS,
                          num_layers=blocks, operations=comfy.ops.disable_weight_init).state_dict()
    generator = torch.Generator().manual_seed(32)
    state = {k: tiny._seeded_like(k, v, generator).to(torch.bfloat16) for k, v in sorted(shapes.items())}
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": torch.float32})
    del state
    gc.collect()
    return model


def windows_node(model):
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    return WanContextWindowsManualNode.execute(model, context_length=WINDOW_FRAMES, context_overlap=OVERLAP_FRAMES,
                                               context_schedule="standard_static", context_stride=1, closed_loop=False,
                                               fuse_method="pyramid", freenoise=False).result[0]


def text(seed: int):
    return [[torch.randn(1, TEXT_TOKENS, 4096, generator=torch.Generator().manual_seed(seed)), {}]]


def step(model, frames: int) -> torch.Tensor:
    """One CFG step of ComfyUI's own sampler on a seeded latent of ``frames`` latent frames."""
    import comfy.sample

    shape = (1, 16, frames, HEIGHT, WIDTH_LATENT)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(frames))
    return comfy.sample.sample(model, noise, 1, 5.0, "euler", "simple", text(1), text(2), torch.zeros(shape), seed=0,
                               disable_pbar=True)


def entry_of(patched):
    """The IdentityEntry of an IaD Apply (every patched block shares it)."""
    return patched.object_patches["diffusion_model.blocks.0.cross_attn.forward"].entries[0]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class quiet_stderr:
    """Kineto writes a line to stderr whenever a profiler starts and stops; hide those."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


def step_memory(model, frames: int) -> tuple[float, float, float]:
    """(peak, kept, allocated) MiB of torch's CPU allocations over one step, from the profiler's
    memory events (every tensor allocation and free, in order): the peak above what was allocated
    before the step, what is still allocated at its end, and the sum of all its allocations."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = step(model, frames)   # held past the profile: "kept" counts the step's output
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = allocated = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
        allocated += max(nbytes, 0)
    del out
    return peak / 2**20, live / 2**20, allocated / 2**20


def quartiles(values) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return f"[{q1:+.2f}, {q3:+.2f}] %"


def identity_flop_share(frames: int) -> float:
    """Multiply-adds of the identity attention over those of a block in a window call of ``frames``
    latent frames (cond + uncond rows; the identity acts on the cond rows: uncond_identity none)."""
    L, d, T = frames * (HEIGHT // 2) * (WIDTH_LATENT // 2), WIDTH, TEXT_TOKENS
    base = 2 * (4 * L * d * d + 2 * L * L * d + 2 * L * d * d + 2 * T * d * d + 2 * L * T * d + 2 * L * d * FFN)
    return 2 * L * ID_TOKENS * d / base


def run(blocks: int, rounds: int) -> dict:
    import comfy.model_management as mm
    import comfy.patcher_extension as pe

    rec = Recorder()
    t0 = time.perf_counter()
    model = build_model(blocks)
    build_s = time.perf_counter() - t0
    assert type(model.model.model_config).__name__ == "WAN21_T2V", type(model.model.model_config).__name__
    model.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, "iad-bench", rec.predict_noise)
    model.model.diffusion_model.register_forward_pre_hook(rec.model_call, with_kwargs=True)

    adapter_module = af.module("iad.adapter")
    config = adapter_module.AdapterConfig(
        family="wan2.1", model_dim=WIDTH, token_dim=1024, blocks=list(range(blocks)), num_tokens=ID_TOKENS,
        num_registers=0, kv_bias=False, resampler_dim=512, resampler_depth=2, resampler_heads=8, resampler_dim_head=64,
        name="bench adapter")
    adapter = adapter_module.IdentityAdapter.random(config, seed=0)
    adapter.resampler.register_forward_hook(lambda *a: setattr(rec, "resampler", rec.resampler + 1))
    for b in config.blocks:
        adapter.blocks[str(b)].to_k_ip.register_forward_hook(rec.kv_call)
    iad_model = af.module("iad.patching").IaDModel.wrap(adapter, "bench")
    identity = af.module("nodes.iad_nodes").IaDIdentity.execute(iad_model, af.face_embeds()).result[0]
    resampler_by_identity = rec.resampler
    rec.resampler = 0

    windowed = windows_node(model)
    variants = {}
    for n in COUNTS:
        variants[(n, VARIANTS[0])] = windowed.clone()   # every step a patcher of its own: each switches models
        variants[(n, VARIANTS[1])] = af.apply(windowed, iad_model, identity, start=0.0, end=1.0)
        variants[(n, VARIANTS[2])] = windowed.clone()

    torch.set_num_threads(1)
    outputs = {}
    counts, names = list(COUNTS), list(VARIANTS)
    rng = random.Random(0)
    t0 = time.perf_counter()
    for round_index in range(rounds + 1):
        rng.shuffle(counts)
        for n in counts:            # a count's three variants back to back, in a shuffled order: paired
            rng.shuffle(names)
            for name in names:
                key = (n, name)
                rec.key = key if round_index > 0 else ("warm-up",) + key
                outputs[key] = step(variants[key], COUNTS[n]).float()
    timed_s = time.perf_counter() - t0

    # memory: what each count's identity holds, and the step's transient peak
    held = {}
    for n in COUNTS:
        entry = entry_of(variants[(n, VARIANTS[1])])
        held[n] = {"tokens": tensor_bytes([entry.tokens]),
                   "kv": tensor_bytes(t for pair in entry._kv.values() for t in pair), "kv_entries": len(entry._kv)}
    peaks: dict = {}
    memory_order = [(n, v) for n in COUNTS for v in VARIANTS[:2]] * MEMORY_REPEATS
    rng.shuffle(memory_order)
    for key in memory_order:
        rec.key = ("memory",) + key
        peaks.setdefault(key, []).append(step_memory(variants[key], COUNTS[key[0]]))
    mm.unload_all_models()

    return {"blocks": blocks, "rounds": rounds, "rec": rec, "outputs": outputs, "held": held, "peaks": peaks,
            "adapter_bytes": tensor_bytes(adapter.parameters()), "resampler_by_identity": resampler_by_identity,
            "params": sum(p.numel() for p in model.model.diffusion_model.parameters()), "build_s": build_s,
            "timed_s": timed_s}


def report(r: dict) -> None:
    rec, blocks, rounds = r["rec"], r["blocks"], r["rounds"]
    slice_note = "the whole model" if blocks == LAYERS else f"a slice: blocks 0-{blocks - 1} of {LAYERS}"
    print(f"== Wan 2.1 T2V 1.3B layout (width {WIDTH}, {HEADS} heads, ffn {FFN}), {blocks} blocks ({slice_note}, "
          f"{r['params'] / 1e9:.2f} B parameters), random weights, fp32 CPU, 1 torch thread")
    print(f"IaD in every block, {ID_TOKENS} identity tokens; {TEXT_TOKENS} text tokens; latent 8x8 (16 tokens a frame); "
          f"WanContextWindowsManual context_length {WINDOW_FRAMES} / overlap {OVERLAP_FRAMES} video frames "
          f"(4 / 2 latent frames), standard_static, pyramid, FreeNoise off; 1 euler step, cfg 5; {rounds} interleaved "
          f"rounds (+1 warm-up) of {len(VARIANTS) * len(COUNTS)} steps; model built in {r['build_s']:.0f} s")
    print("\nwindows (latent frame indices of each model call; '+a' = core's causal anchor frame prepended):")
    for n, frames in COUNTS.items():
        calls = rec.calls[(n, VARIANTS[1])][:n]
        lists = ", ".join("[all]" if idx is None else (f"+{a} " if a is not None else "") + f"[{idx[0]}..{idx[-1]}]"
                          for _, _, idx, a in calls)
        print(f"  {n} window(s): {frames} latent frames ({4 * (frames - 1) + 1} video frames) -> {lists}")

    print(f"\n{'windows':>7s} {'frames/call':>11s} | {'step, windows alone':>19s} {'per window':>10s} "
          f"{'per frame':>9s} | {'step, + IaD':>11s} {'per window':>10s} | {'identity':>8s} {'middle half':>17s} | "
          f"{'A/A':>7s} {'middle half':>17s} | {'theory':>7s}")
    overheads, aa = {}, {}
    for n in COUNTS:
        alone, iad, again = (rec.steps[(n, v)] for v in VARIANTS)
        # the same round, back to back: + IaD over the mean of the two steps without it; A/A: those two
        paired = [100 * (b / ((a + c) / 2) - 1) for a, b, c in zip(alone, iad, again)]
        paired_aa = [100 * (c / a - 1) for a, c in zip(alone, again)]
        overheads[n], aa[n] = statistics.median(paired), statistics.median(paired_aa)
        calls = rec.calls[(n, VARIANTS[1])][:n]
        frames = [f for _, f, _, _ in calls]
        share = statistics.mean(identity_flop_share(f) for f in frames)
        base, with_iad = statistics.median(alone), statistics.median(iad)
        print(f"{n:7d} {'/'.join(map(str, frames)):>11s} | {base:17.3f} s {base / n:8.3f} s {base / sum(frames):7.3f} s | "
              f"{with_iad:9.3f} s {with_iad / n:8.3f} s | {overheads[n]:+7.2f}% {quartiles(paired):>17s} | "
              f"{aa[n]:+6.2f}% {quartiles(paired_aa):>17s} | {100 * share:+6.3f}%")
    print(f"(thread CPU time of the step's noise prediction, all its windows and their fusion; step and per window: "
          f"medians over the {rounds} rounds; per frame: over the frames of its model calls. identity: + IaD over the "
          f"mean of the two steps without identity of the same round, median of the {rounds} rounds and their middle "
          f"half (quartiles); A/A: the second step without identity over the first, the same way: the noise floor. "
          f"theory: the identity attention's "
          f"multiply-adds over those of a block in the window calls)")
    mins = {n: 100 * (min(rec.steps[(n, VARIANTS[1])]) / statistics.mean(min(rec.steps[(n, v)]) for v in VARIANTS[::2])
                      - 1) for n in COUNTS}
    mins_aa = {n: 100 * (min(rec.steps[(n, VARIANTS[2])]) / min(rec.steps[(n, VARIANTS[0])]) - 1) for n in COUNTS}
    print("fastest step of each instead: identity " + ", ".join(f"{mins[n]:+.2f} % at {n}" for n in COUNTS)
          + "; A/A " + ", ".join(f"{mins_aa[n]:+.2f} %" for n in COUNTS))

    print(f"\n{'windows':>7s} | {'identity holds: tokens':>22s} {'K/V cache':>10s} | {'step peak: alone':>16s} "
          f"{'+ IaD':>10s} {'identity adds':>13s} | {'identity allocates per window (per frame)':>41s} | {'kept: alone / + IaD':>19s}")
    held_mib, repeatable, per_window = {}, True, {}
    for n in COUNTS:
        h = r["held"][n]
        alone, with_iad = r["peaks"][(n, VARIANTS[0])], r["peaks"][(n, VARIANTS[1])]
        repeatable &= len(set(alone)) == 1 and len(set(with_iad)) == 1
        (peak_a, kept_a, total_a), (peak_i, kept_i, total_i) = alone[0], with_iad[0]
        held_mib[n] = (h["tokens"] + h["kv"]) / 2**20
        per_window[n] = (total_i - total_a) / n
        frames = sum(f for _, f, _, _ in rec.calls[(n, VARIANTS[1])][:n])
        print(f"{n:7d} | {h['tokens'] / 2**10:18.0f} KiB {h['kv'] / 2**20:6.2f} MiB | {peak_a:12.2f} MiB "
              f"{peak_i:6.2f} MiB {peak_i - peak_a:+9.2f} MiB | {per_window[n]:25.2f} MiB ({1024 * per_window[n] * n / frames:5.0f} KiB) | "
              f"{kept_a * 1024:6.0f} / {kept_i * 1024:.0f} KiB")
    print(f"(identity holds: read from each count's IaD Apply, {r['held'][1]['kv_entries']} cached (K, V) pairs, one per "
          f"block; the adapter's weights, {r['adapter_bytes'] / 2**20:.0f} MiB, are loaded once for any number of "
          f"windows. Step peak: torch's CPU allocations over one step (the profiler's memory events) above what was "
          f"allocated before it; identity allocates: the step's allocations with IaD minus without, over the windows "
          f"(transient, freed within the window); kept: still allocated at the step's end (its output). "
          f"{MEMORY_REPEATS} runs each, identical: {repeatable})")

    print()
    for n in COUNTS:
        key = (n, VARIANTS[1])
        timed = len(rec.steps[key])
        kv = sum(count for k, count in rec.kv.items() if k[-2:] == key)
        batches = sorted({b for b, _, _, _ in rec.calls[key]})
        print(f"{n} window(s): {len(rec.calls[key])} model calls in {timed} timed steps (batch {batches}: cond and "
              f"uncond together); A/A bit-identical to windows alone: "
              f"{torch.equal(r['outputs'][(n, VARIANTS[0])], r['outputs'][(n, VARIANTS[2])])}; identity changes the "
              f"step: {not torch.equal(r['outputs'][(n, VARIANTS[0])], r['outputs'][key])}; identity K/V projected "
              f"{kv} time(s) for {blocks} blocks over {timed + 1 + MEMORY_REPEATS} steps (timed, warm-up, memory)")
    print(f"identity tokens: computed {r['resampler_by_identity']} time(s) by IaD Identity before sampling, "
          f"{rec.resampler} time(s) while sampling (all counts, all steps)")
    same_mem = len({round(m, 3) for m in held_mib.values()}) == 1
    held_text = (f"{held_mib[1]:.2f} MiB at every count" if same_mem
                 else ", ".join(f"{held_mib[n]:.2f}" for n in COUNTS) + " MiB at 1, 2, 4")
    peak_added = {n: r["peaks"][(n, VARIANTS[1])][0][0] - r["peaks"][(n, VARIANTS[0])][0][0] for n in COUNTS}
    print("\nidentity per window: " + ", ".join(f"{overheads[n]:+.1f} % at {n}" for n in COUNTS) + " windows (A/A "
          "noise floor " + ", ".join(f"{aa[n]:+.1f} %" for n in COUNTS) + f"); identity memory {held_text} (tokens + "
          f"K/V; the adapter's {r['adapter_bytes'] / 2**20:.0f} MiB of weights once), step peak "
          + ", ".join(f"{peak_added[n]:+.2f}" for n in COUNTS) + " MiB at 1, 2, 4 windows")
    print(f"timed rounds {r['timed_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=BLOCKS, help=f"blocks of the 1.3B layout (1-{LAYERS}; default {BLOCKS})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds (default {ROUNDS})")
    args = parser.parse_args()
    if not 1 <= args.blocks <= LAYERS:
        parser.error(f"--blocks must be 1-{LAYERS}")
    start = time.perf_counter()
    torch.set_grad_enabled(False)
    from harness.comfy_env import import_comfy

    import_comfy()
    af.pack()
    report(run(args.blocks, args.rounds))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
