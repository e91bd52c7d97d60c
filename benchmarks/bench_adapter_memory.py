"""What the adapters cost in memory: their bytes against the base model's, and peak memory during one
sampling step with and without them, side by side in one run.

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_adapter_memory.py
    ... bench_adapter_memory.py --sizes-only        # the exact parameter/byte table only (seconds)

1. Sizes (exact): the base models are ComfyUI's own ``WanModel`` at the released shapes (Wan 2.1 T2V
   1.3B and 14B), built on the meta device; the adapters are the pack's default configuration for
   each (``iad.train``'s ``adapter_config_for``: every block, identity tokens a sixth of the width,
   a 1x resampler feed-forward, the trained decoupler), the layout that was the default before
   (``wide_adapter_fields``: tokens min(width, 2048) wide, a 4x feed-forward), the shipped example
   configs' adapters, Lynx full and lite (``AdapterConfig.lynx_full/lynx_lite``) and Lynx full's
   ref-adapter (``ref_layers``: 40 x 2 square projections). Bytes at the dtype each one actually uses:
   the base in bf16 (and fp8), IaD checkpoints as ``iad.train`` saves them (fp32; IaD Model Loader's
   ``auto`` keeps that) and in bf16, Lynx's adapters in bf16 (what the loaders default to).
2. Peak memory of one sampling step (cfg, a cond+uncond batch), each case in its own process, the
   same seeded latent and text: the unpatched model, then with each adapter. On the CPU the peak is
   the process's resident memory, sampled every 2 ms during the step (weights included); with a GPU,
   ``torch.cuda.max_memory_allocated`` too. The 1.3B runs whole; the 14B does not fit this machine's
   RAM, so it runs as a slice at full width: its first 4 of 40 blocks, with the adapters' parts for
   those blocks (the resampler whole). The weight share scales with the block count; the transient
   of the identity attention does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import tiny_models as tiny  # noqa: E402

WAN = {  # ComfyUI WanModel arguments of the released T2V models
    "1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "14B": dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}
SLICE_BLOCKS = 4                      # the 14B runs as its first 4 blocks at full width
LATENT = (1, 16, 3, 24, 40)           # 3 x 12 x 20 = 720 video tokens per sample
TEXT_TOKENS = 64
GB = 1024 ** 3


def wan_module(size: str, num_layers: int | None = None, device="meta"):
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    args = dict(WAN[size])
    if num_layers is not None:
        args["num_layers"] = num_layers
    return WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, out_dim=16, freq_dim=256,
                    text_dim=4096, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
                    device=device, dtype=None, operations=comfy.ops.disable_weight_init, **args)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def iad_default_config(size: str, blocks=None):
    from iad.patching.arch import ArchInfo
    from iad.train.base_model import adapter_config_for

    w = WAN[size]
    arch = ArchInfo("wan", f"Wan 2.1 T2V {size}", w["dim"], w["num_heads"], w["num_layers"])
    config = adapter_config_for(SimpleNamespace(adapter={} if blocks is None else {"blocks": blocks}), arch, None)
    return config


def example_config(name: str, size: str):
    """The adapter a shipped example training config (configs/) trains on the released Wan shapes."""
    from iad.patching.arch import ArchInfo
    from iad.train.base_model import adapter_config_for

    w = WAN[size]
    arch = ArchInfo("wan", f"Wan 2.1 T2V {size}", w["dim"], w["num_heads"], w["num_layers"])
    fields = json.loads((REPO / "configs" / name).read_text())["adapter"]
    return adapter_config_for(SimpleNamespace(adapter=fields), arch, None)


def config_save_dtype(name: str) -> str:
    dtype = json.loads((REPO / "configs" / name).read_text()).get("save_dtype", "float32")
    return {"bfloat16": "bf16", "float32": "fp32"}[dtype]


def adapter_params(config) -> int:
    import torch

    from iad.adapter import IdentityAdapter

    with torch.device("meta"):
        return count(IdentityAdapter(config))


def sizes() -> list[dict]:
    from iad.adapter import AdapterConfig
    from iad.lynx_ref import RefLayout

    base = {size: count(wan_module(size)) for size in WAN}
    rows = []
    from iad.train.base_model import wide_adapter_fields

    for size in WAN:
        n = adapter_params(iad_default_config(size))
        rows.append(dict(adapter=f"IaD default ({size})", base=size, params=n, stored="fp32", stored_bytes=4 * n))
        wide = AdapterConfig.from_dict({**iad_default_config(size).to_dict(), **wide_adapter_fields(WAN[size]["dim"])})
        n = adapter_params(wide)
        rows.append(dict(adapter=f"IaD wide, the default before ({size}: {wide_adapter_fields(WAN[size]['dim'])})",
                         base=size, params=n, stored="fp32", stored_bytes=4 * n))
    for name, size in (("train_wan2.1_t2v_1.3B.json", "1.3B"), ("train_wan2.1_t2v_14B_fsdp.json", "14B")):
        config = example_config(name, size)
        n = adapter_params(config)
        rows.append(dict(adapter=f"configs/{name}", base=size, params=n, stored=config_save_dtype(name),
                         stored_bytes={"fp32": 4, "bf16": 2}[config_save_dtype(name)] * n))
    for name, config in (("Lynx full ID", AdapterConfig.lynx_full()), ("Lynx lite ID", AdapterConfig.lynx_lite())):
        n = adapter_params(config)
        rows.append(dict(adapter=name, base="14B", params=n, stored="bf16", stored_bytes=2 * n))
    n = RefLayout(40, 5120, "BF16").parameters()
    rows.append(dict(adapter="Lynx full ref", base="14B", params=n, stored="bf16", stored_bytes=2 * n))
    for row in rows:
        b = base[row["base"]]
        row.update(base_params=b, param_share=row["params"] / b, bytes_vs_bf16_base=row["stored_bytes"] / (2 * b),
                   bytes_vs_fp8_base=row["stored_bytes"] / b, bf16_bytes_vs_bf16_base=row["params"] / b)
    return rows


# ---------------------------------------------------------------------------------------------- step


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Resident memory sampled every 2 ms in a thread while the block runs."""

    def __enter__(self):
        self.peak, self._stop = _rss(), False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _release_freed_memory() -> None:
    """glibc keeps freed heap memory (tensors under its mmap threshold) in the process; hand it back."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:   # not glibc: resident memory may then include freed memory
        pass


def run_case(case: str) -> dict:
    """One case in this process: load, one sampling step, peak memory."""
    import torch

    from iad.comfy_runtime import import_comfy
    from harness.paths import CACHE_DIR, comfyui_dir

    gpu = torch.cuda.is_available()
    import_comfy(comfyui_dir(), cpu=not gpu, base_directory=CACHE_DIR / "bench-memory-comfy")
    import comfy.model_management
    import comfy.ops
    import comfy.sample
    import comfy.sd

    from iad import patching
    from iad.adapter import AdapterConfig, IdentityAdapter
    from iad.lynx_ref import LynxRefLayers, RefLayout
    from iad.patching.wan_ref import IMAGE, ZERO, ReferenceEntry, apply_reference

    size = "1.3B" if case.startswith("1.3B") else "14B"
    layers = None if size == "1.3B" else SLICE_BLOCKS
    with torch.device("meta"):
        meta = wan_module(size, layers)
    state = tiny._randomise(meta, 0)
    del meta
    model = comfy.sd.load_diffusion_model_state_dict(state)
    del state
    blocks = list(range(WAN[size]["num_layers"] if layers is None else layers))
    adapters = case.split(":", 1)[1].split("+") if ":" in case else []

    def identity_adapter(config, dtype):
        with torch.device("meta"):
            shape = IdentityAdapter(config)
        adapter = IdentityAdapter.from_state_dict(config, tiny._randomise(shape, 1), operations=comfy.ops.manual_cast)
        return patching.IaDModel.wrap(adapter.to(dtype), name=config.name)

    for name in adapters:
        if name in ("iad", "iad_bf16"):
            config = iad_default_config(size, blocks)
            iad_model = identity_adapter(config, torch.float32 if name == "iad" else torch.bfloat16)
        elif name in ("lynx_full", "lynx_lite"):
            config = (AdapterConfig.lynx_full(blocks=blocks) if name == "lynx_full"
                      else AdapterConfig.lynx_lite(blocks=[b for b in blocks if b % 2 == 0]))
            iad_model = identity_adapter(config, torch.bfloat16)
        elif name == "ref":
            ref = LynxRefLayers(RefLayout(len(blocks), WAN[size]["dim"], "BF16"), operations=comfy.ops.manual_cast)
            ref.load_state_dict(tiny._randomise(ref, 2))
            import comfy.model_patcher
            patcher = comfy.model_patcher.ModelPatcher(ref.to(torch.bfloat16), load_device=comfy.model_management.get_torch_device(),
                                                       offload_device=comfy.model_management.unet_offload_device())
            g = torch.Generator().manual_seed(3)
            latents = {IMAGE: torch.randn(1, 16, 1, 32, 32, generator=g), ZERO: torch.randn(1, 16, 1, 32, 32, generator=g)}
            entry = ReferenceEntry(patcher, latents, torch.randn(1, 8, 4096, generator=g), 1.0, 0.0, 1.0,
                                   patching.step_gate(model, 0.0, 1.0))
            model = apply_reference(model, entry, len(blocks))
            continue
        else:
            raise SystemExit(f"unknown adapter {name}")
        with torch.no_grad():
            tokens = iad_model.adapter.identity_tokens(torch.randn(1, 512, dtype=torch.bfloat16 if name != "iad" else torch.float32)).float()
        identity = patching.IaDIdentity(tokens=tokens, adapter_id=id(iad_model.adapter), adapter_name=name, decoupling="none",
                                        num_references=1)
        model = patching.apply_identity(model, iad_model, identity, 1.0, 0.0, 1.0, patching.UNCOND_NULL)

    g = torch.Generator().manual_seed(4)
    noise = torch.randn(*LATENT, generator=g)
    _release_freed_memory()   # what building the random weights freed, so resident memory counts only what is held
    positive = [[torch.randn(1, TEXT_TOKENS, 4096, generator=g), {}]]
    negative = [[torch.randn(1, TEXT_TOKENS, 4096, generator=g), {}]]
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    before = _rss()
    with PeakRSS() as peak:
        out = comfy.sample.sample(model, noise, 1, 5.0, "euler", "simple", positive, negative, torch.zeros_like(noise),
                                  seed=0, disable_pbar=True)
    result = dict(case=case, rss_before_step=before, rss_peak=peak.peak, finite=bool(torch.isfinite(out).all()))
    if gpu:
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    return result


CASES = ["1.3B", "1.3B:iad", "1.3B:iad_bf16",
         "14B-slice", "14B-slice:iad", "14B-slice:lynx_full", "14B-slice:lynx_lite", "14B-slice:ref",
         "14B-slice:lynx_full+ref", "14B-slice:lynx_lite+ref"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-only", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)   # one case, in a child process
    parser.add_argument("--cases", nargs="*", default=CASES)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)))
        return

    from harness.comfy_env import import_comfy

    import_comfy()
    rows = sizes()
    print("Sizes (exact): adapter parameters and bytes against the base's (Wan 2.1 T2V, ComfyUI's WanModel)\n")
    print("| adapter | base | adapter params | share of base params | stored as | bytes vs bf16 base | bytes vs fp8 base | in bf16 vs bf16 base |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['adapter']} | Wan {r['base']} ({r['base_params'] / 1e9:.2f} G) | {r['params'] / 1e6:.0f} M | "
              f"{100 * r['param_share']:.1f} % | {r['stored']} | {100 * r['bytes_vs_bf16_base']:.1f} % | "
              f"{100 * r['bytes_vs_fp8_base']:.1f} % | {100 * r['bf16_bytes_vs_bf16_base']:.1f} % |")
    results = {"sizes": rows, "steps": []}
    if not args.sizes_only:
        env = dict(os.environ)
        for case in args.cases:
            proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise SystemExit(f"case {case} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            results["steps"].append(json.loads(line[len("RESULT "):]))
        baselines = {r["case"]: r for r in results["steps"] if ":" not in r["case"]}
        device = "GPU" if "cuda_peak" in results["steps"][0] else "CPU (resident memory)"
        print(f"\nPeak memory of one cfg sampling step, {LATENT[2]}x{LATENT[3] // 2}x{LATENT[4] // 2} video tokens, "
              f"{device}; each case in its own process\n")
        print("| case | peak | vs unpatched | held before the step (weights) | step's own peak |" + (" GPU peak | vs unpatched |" if device == "GPU" else ""))
        print("|---|---|---|---|---|" + ("---|---|" if device == "GPU" else ""))
        for r in results["steps"]:
            base = baselines[r["case"].split(":")[0]]
            line = (f"| {r['case']} | {r['rss_peak'] / GB:.2f} GB | {r['rss_peak'] / base['rss_peak']:.3f} x "
                    f"(+{(r['rss_peak'] - base['rss_peak']) / GB:.2f} GB) | {r['rss_before_step'] / GB:.2f} GB | "
                    f"+{(r['rss_peak'] - r['rss_before_step']) / GB:.2f} GB |")
            if "cuda_peak" in r:
                line += f" {r['cuda_peak'] / GB:.2f} GB | {r['cuda_peak'] / base['cuda_peak']:.3f} x |"
            print(line)
            assert r["finite"], r
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
