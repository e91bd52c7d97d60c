"""Test-only nodes for the Wan-variant server tests (never shipped).

- ``IaDTestStreamProbe``: MODEL -> a clone that, while it samples, records what named modules of the
  diffusion model (or of the IaD adapter, or of a core model patch such as InfiniteTalk's) receive
  and return, into ``output/iad_probe/<name>.safetensors``. Forward hooks are registered when sampling
  starts and removed when it ends (an OUTER_SAMPLE wrapper), so nothing outlives the prompt and the
  model computes exactly what it would without the probe.
- ``IaDTestAudioEncoderOutput``: the AUDIO_ENCODER_OUTPUT a wav2vec2 / whisper encoder would give for
  ``seconds`` of audio (shapes as ComfyUI's encoders make them), seeded. Real encoders have fixed
  configs of 95 M to 640 M parameters: no tiny real-format one can exist.
- ``IaDTestAudio``: AUDIO (a seeded tone with noise), for core's own audio feature nodes (WanDancer's).
- ``IaDTestClipVisionOutput``: CLIP_VISION_OUTPUT of CLIP-H's shape (penultimate hidden states
  [1, 257, 1280]), seeded; CLIP-H's config is fixed too.
"""

from __future__ import annotations

import hashlib
import os

import torch
from comfy_api.v0_0_2 import io

PROBE_KEY = "iad_test_probe"


def _seeded(text: str, *shape) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _root(patcher, name: str):
    """The module a probe path starts from: ``diffusion_model``, ``adapter`` (the IaD adapter IaD Apply
    attached) or ``model_patch`` (the first core model patch with a ``model_patch``, e.g. InfiniteTalk's)."""
    if name == "diffusion_model":
        return patcher.model.diffusion_model
    patches = patcher.model_options.get("transformer_options", {}).get("patches", {})
    for kind, entries in patches.items():
        for entry in entries:
            if name == "adapter" and kind == "iad_adapters":
                return entry.patcher.model
            if name == "model_patch" and hasattr(entry, "model_patch"):
                return entry.model_patch.model
    raise ValueError(f"IaDTestStreamProbe: the model has no {name}")


class _Probe:
    def __init__(self, name: str, paths: list[str], calls: int):
        self.name, self.paths, self.calls = name, paths, calls

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        import folder_paths
        from safetensors.torch import save_file

        patcher = executor.class_obj.model_patcher
        records: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        handles = []

        def hook(path):
            def record(module, args, kwargs, output):
                n = counts.get(path, 0)
                counts[path] = n + 1
                if n >= self.calls:
                    return
                items = [(f"in{i}", a) for i, a in enumerate(args)] + [(f"kw:{k}", v) for k, v in kwargs.items()]
                items += [(f"out{i}", o) for i, o in enumerate(output if isinstance(output, tuple) else (output,))]
                for tag, value in items:
                    if isinstance(value, torch.Tensor):
                        records[f"{path}|{n}|{tag}"] = value.detach().float().cpu().contiguous().clone()
            return record

        for path in self.paths:
            root_name, _, sub = path.partition(":") if ":" in path else ("diffusion_model", "", path)
            module = _root(patcher, root_name)
            for part in sub.split(".") if sub else []:
                module = getattr(module, part)
            handles.append(module.register_forward_hook(hook(path), with_kwargs=True))
        try:
            return executor(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
            records.update({f"{path}|count": torch.tensor(counts.get(path, 0)) for path in self.paths})
            folder = os.path.join(folder_paths.get_output_directory(), "iad_probe")
            os.makedirs(folder, exist_ok=True)
            save_file(records, os.path.join(folder, f"{self.name}.safetensors"))


class IaDTestStreamProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestStreamProbe",
            display_name="IaD Test: Stream Probe (test-only)",
            category="IaD/testing",
            description="TEST ONLY: records the inputs and outputs of named modules while the model samples.",
            inputs=[
                io.Model.Input("model", tooltip="The model to watch."),
                io.String.Input("modules", tooltip="Comma-separated module paths (diffusion_model by default; "
                                                   "'adapter:' or 'model_patch:' prefixes)."),
                io.String.Input("name", tooltip="File name under output/iad_probe/."),
                io.Int.Input("calls", default=1, min=1, max=64, tooltip="How many calls per module to record."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, modules: str, name: str, calls: int = 1) -> io.NodeOutput:
        import comfy.patcher_extension

        patched = model.clone()
        patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, PROBE_KEY)
        paths = [p.strip() for p in modules.split(",") if p.strip()]
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, PROBE_KEY, _Probe(name, paths, calls))
        return io.NodeOutput(patched)


AUDIO_LAYOUTS = {   # encoder -> (layers incl. the embedding output, width, frames per second)
    "wav2vec2-large": (25, 1024, 50), "wav2vec2-base": (13, 768, 50), "whisper-large-v3": (33, 1280, 50),
}


class IaDTestAudioEncoderOutput(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestAudioEncoderOutput",
            display_name="IaD Test: Audio Encoder Output (test-only)",
            category="IaD/testing",
            description="TEST ONLY: seeded AUDIO_ENCODER_OUTPUT of a wav2vec2 / whisper encoder's shape.",
            inputs=[
                io.Combo.Input("encoder", options=list(AUDIO_LAYOUTS), tooltip="Whose output shape to make."),
                io.Float.Input("seconds", default=2.0, min=0.1, max=60.0, tooltip="Audio length."),
                io.Int.Input("seed", default=0, min=0, max=2**31, tooltip="Which audio."),
            ],
            outputs=[io.AudioEncoderOutput.Output()],
        )

    @classmethod
    def execute(cls, encoder: str, seconds: float, seed: int = 0) -> io.NodeOutput:
        layers, width, fps = AUDIO_LAYOUTS[encoder]
        frames = 1500 if encoder.startswith("whisper") else max(1, int(seconds * fps))   # whisper pads to 30 s
        hidden = tuple(_seeded(f"{encoder}/{seed}/{i}", 1, frames, width) for i in range(layers))
        return io.NodeOutput({"encoded_audio": hidden[-1], "encoded_audio_all_layers": hidden,
                              "audio_samples": int(seconds * 16000)})


class IaDTestAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestAudio",
            display_name="IaD Test: Audio (test-only)",
            category="IaD/testing",
            description="TEST ONLY: seeded AUDIO, a 2 Hz-modulated 220 Hz tone with noise.",
            inputs=[io.Float.Input("seconds", default=2.0, min=0.1, max=60.0, tooltip="Length."),
                    io.Int.Input("seed", default=0, min=0, max=2**31, tooltip="Which noise.")],
            outputs=[io.Audio.Output()],
        )

    @classmethod
    def execute(cls, seconds: float, seed: int = 0) -> io.NodeOutput:
        rate = 16000
        t = torch.arange(int(seconds * rate)) / rate
        wave = torch.sin(2 * torch.pi * 220 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 2 * t))
        wave = wave + 0.05 * _seeded(f"audio/{seed}", t.shape[0])
        return io.NodeOutput({"waveform": wave.view(1, 1, -1).float(), "sample_rate": rate})


class IaDTestClipVisionOutput(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestClipVisionOutput",
            display_name="IaD Test: CLIP Vision Output (test-only)",
            category="IaD/testing",
            description="TEST ONLY: seeded CLIP_VISION_OUTPUT of CLIP-H's shape.",
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**31, tooltip="Which image.")],
            outputs=[io.ClipVisionOutput.Output()],
        )

    @classmethod
    def execute(cls, seed: int = 0) -> io.NodeOutput:
        import comfy.clip_vision

        out = comfy.clip_vision.Output()
        out.penultimate_hidden_states = _seeded(f"clip/{seed}", 1, 257, 1280)
        out.last_hidden_state = _seeded(f"clip/{seed}/last", 1, 257, 1280)
        out.image_embeds = _seeded(f"clip/{seed}/embeds", 1, 1024)
        return io.NodeOutput(out)


NODES = [IaDTestStreamProbe, IaDTestAudioEncoderOutput, IaDTestAudio, IaDTestClipVisionOutput]
