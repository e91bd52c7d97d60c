# Developer commands. A newcomer needs two: `make demo` (set-up + demo) and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=
# Which prepared ComfyUI `make demo` uses: empty = the default (your COMFYUI_PATH, else 0.3.75);
# v0.28.2 = the current upstream release (see README). `python scripts/lanes.py list` shows them.
COMFYUI ?=
LANE := $(PY) scripts/lanes.py run "$(COMFYUI)" --

.PHONY: setup demo test test-fast models bench clean gpu-bundle gpu-check gpu-world gpu-twin torch-floor

setup:  ## venv, torch, ComfyUI v0.28.2 + 0.3.75 (or COMFYUI_PATH), all Python deps, chromium for browser tests
	bash scripts/setup.sh

models: setup  ## the tiny deterministic demo/test models under .cache/comfyui-<lane>/tiny-models
	$(LANE) $(PY) scripts/make_tiny_models.py

demo: setup models  ## start ComfyUI with this pack on 127.0.0.1:8188 and run the demo workflow once
	$(LANE) $(PY) scripts/demo.py $(DEMO_ARGS)

test: setup  ## the whole suite on every ComfyUI lane (v0.28.2, 0.3.75), then the browser tests on the newest frontend
	$(PY) scripts/lanes.py test $(PYTEST_ARGS)

test-fast: setup  ## everything except the browser and slow tests, on the default ComfyUI
	$(LANE) $(PY) -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

bench: setup  ## all benchmarks (prints side-by-side ratios)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(LANE) $(PY) $$b || exit 1; done

# The GPU check (docs/gpu.md). On the GPU machine there is no .venv: its own python3 runs it.
GPU_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
GPU_CHECK_ARGS ?=

gpu-bundle:  ## .gpu/: ComfyUI v0.28.2 and the wheels the GPU machine lacks, within 64 MiB with the working tree
	$(PY) scripts/gpu_bundle.py build

gpu-check:  ## everything that needs a GPU (<= 8 min on one H100): docs/results/gpu.json + gpu.md; one line and exit 0 without a GPU
	$(GPU_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-world:  ## the GPU-scale synthetic world + its experiment (<= 8 min on one H100): docs/results/synth_experiment_gpu.json; one line and exit 0 without a GPU
	$(GPU_PY) benchmarks/gpu_world.py $(GPU_WORLD_ARGS)

gpu-twin: gpu-bundle  ## before a GPU lending: gpu-check's and gpu-world's CPU smoke runs on the GPU machine's Python 3.12, torch 2.11 and the restored bundle (.cache/gpu-twin, ~5 GB; docs/gpu.md)
	$(PY) scripts/gpu_twin.py build
	$(PY) scripts/gpu_twin.py run $(GPU_TWIN_ARGS)

# The oldest torch the pack supports (iad/torch_support.py); TORCH_FLOOR_ARGS="--torch 2.5.1" probes another.
TORCH_FLOOR_ARGS ?=

torch-floor: setup  ## the suite but browser and slow tests on the oldest supported torch (2.6) with ComfyUI 0.3.75 (.cache/torch-floor, ~5 GB, ~10 min; docs/architecture.md)
	$(PY) scripts/torch_floor.py build $(TORCH_FLOOR_ARGS)
	$(PY) scripts/torch_floor.py run $(TORCH_FLOOR_ARGS) $(PYTEST_ARGS)

clean:  ## remove generated models, test artefacts and the demo instance (keeps .venv and ComfyUI)
	rm -rf .cache test-artifacts .demo
