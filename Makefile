# Developer commands. A newcomer needs two: `make demo` (set-up + demo) and `make test`.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast models bench clean

setup:  ## venv, torch, ComfyUI 0.3.75 (or COMFYUI_PATH), all Python deps, chromium for browser tests
	bash scripts/setup.sh

models: setup  ## the tiny deterministic demo/test models under .cache/tiny-models
	$(PY) scripts/make_tiny_models.py

demo: setup models  ## start ComfyUI with this pack on 127.0.0.1:8188 and run the demo workflow once
	$(PY) scripts/demo.py $(DEMO_ARGS)

test: setup  ## the whole test suite (real ComfyUI server, real frontend in headless Chromium)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything except the browser and slow tests
	$(PY) -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

bench: setup  ## all benchmarks (prints side-by-side ratios)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove generated models, test artefacts and the demo instance (keeps .venv and ComfyUI)
	rm -rf .cache test-artifacts .demo
