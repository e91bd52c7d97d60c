"""The folder that travels with the working tree to the GPU machine for ``make gpu-check`` (issue 34).

That machine has its own Python 3.12 and torch and reaches no package index, and what travels (the
working tree plus the carried folders) must stay within 64 MiB. So this builds ``.gpu/`` once here:

- ``comfyui.tar.xz``: the ComfyUI v0.28.2 tree, trimmed to what a server needs: no tests, no CI files,
  no API nodes (the check runs with ``--disable-api-nodes``), no subgraph blueprints, no tokenizer
  vocabularies (the check loads no text encoder: its conditioning is generated);
- ``wheels/<wheel>.tar.xz``: each wheel that ComfyUI v0.28.2 and this pack need and the GPU image lacks,
  unpacked, the DWARF sections of its compiled files stripped (av's Cython modules carry 25 MB of them;
  RECORD rewritten to match; scripts/unpacked_wheel.py) and recompressed with xz (a wheel is a zip: xz makes av and comfy-kitchen
  a third smaller, which is what makes them fit);
- ``manifest.json``: every file with its size and sha256, each wheel's requirement and why it is here.

    python scripts/gpu_bundle.py build [--out .gpu] [--python-version 3.12] [--preset 9e] [--without NAME]
    python scripts/gpu_bundle.py restore [--bundle .gpu] --dest DIR   # on the GPU machine: DIR/ComfyUI, DIR/site
    python scripts/gpu_bundle.py size [--bundle .gpu]                  # working tree + bundle against 64 MiB

``build`` prints the total that travels (tracked and untracked-not-ignored files plus the bundle) and
fails if it is over 64 MiB. ``restore`` unpacks, re-zips each wheel, checks every file against the
wheel's RECORD and installs them with ``pip install --no-index --no-deps --target DIR/site``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from unpacked_wheel import check_record, strip_debug, strip_tool  # noqa: E402 - beside this file

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
COMFYUI_VERSION = "0.28.2"
BUNDLE_VERSION = 2   # 2: debug sections stripped from the wheels' ELF files

# (requirement, why the GPU machine needs it, pure: take the py3-none-any wheel where one exists)
WHEELS = (
    ("torchsde==0.2.6", "ComfyUI: its k-diffusion samplers import it", False),
    ("trampoline==0.1.2", "torchsde's dependency", False),
    ("av==18.1.0", "ComfyUI: comfy_api imports PyAV at start", False),
    ("SQLAlchemy==2.1.9", "ComfyUI: the asset routes import it at start (the pure-Python wheel: its C "
                          "speed-ups are optional)", True),
    ("alembic==1.20.1", "ComfyUI: migrations of its sqlite database", False),
    ("Mako==1.4.3", "alembic's dependency", False),
    ("pydantic==2.14.4", "ComfyUI: the asset routes import it at start", False),
    ("pydantic-core==2.50.5", "pydantic's dependency (the version pydantic pins)", False),
    ("annotated-types==0.8.0", "pydantic's dependency", False),
    ("typing-inspection==0.4.5", "pydantic's dependency", False),
    ("pydantic-settings==2.16.3", "ComfyUI: reads each custom node's pyproject.toml with it", False),
    ("python-dotenv==1.2.4", "pydantic-settings' dependency", False),
    ("comfy-kitchen==0.2.20", "ComfyUI: quantized tensors and their CUDA kernels (fp8_scaled models); "
                              "ComfyUI's own pin", False),
    ("comfy-aimdo==0.4.10", "ComfyUI: dynamic VRAM (main.py imports it); ComfyUI's own pin", False),
    ("blake3==1.0.11", "ComfyUI: asset hashing", False),
    ("simpleeval==1.0.8", "ComfyUI: its math nodes", False),
    ("insightface==2.1", "this pack: face detection transforms and alignment (IaD Face Embed, Lynx)", False),
)

# The GPU image's Python packages (docs/gpu.md; as the device documentation listed them, 2026-11-17).
GPU_IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
# The versions the device documentation gives for some of them (its "pip list" row, 2026-11); make gpu-twin
# (scripts/gpu_twin.py) installs exactly these.
IMAGE_VERSIONS = dict(line.split() for line in """
accelerate 1.15.0
botorch 0.18.1
cupy-cuda13x 14.2.0
gpytorch 1.15.2
huggingface-hub 1.33.0
jax 0.11.2
jax-cuda13-pjrt 0.11.2
jax-cuda13-plugin 0.11.2
jaxlib 0.11.2
jaxtyping 0.3.11
numpy 2.5.2
numpyro 0.21.0
onnx 1.23.1
onnx-ir 1.0.0
onnxruntime 1.30.0
onnxscript 0.7.2
pytorch-lightning 2.6.6
safetensors 0.8.0
sentence-transformers 6.0.1
sentencepiece 0.2.2
tiktoken 0.14.0
tokenizers 0.23.2
torch 2.11.0
torch-geometric 2.8.0.post1
torchaudio 2.11.0
torchdiffeq 0.2.5
torchmetrics 1.9.0
torchvision 0.26.0
transformers 5.17.0
triton 3.6.0""".strip().splitlines())
# A requirement another package meets under its own name (the same import module).
SAME_MODULE = {"opencv-python": "opencv-python-headless"}

# What the trimmed ComfyUI tree leaves out (paths relative to the tree; fnmatch-free, plain prefixes).
TRIM_DIRS = (".git", ".github", ".ci", "tests", "tests-unit", "comfy_api_nodes", "blueprints", "script_examples")
TOKENIZER_DATA = re.compile(r"(^|/)[a-z0-9_]*tokenizer/[^/]+\.(json|txt|model)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions(python: str | Path) -> dict[str, str]:
    """{canonical name: version} of what the environment of ``python`` has installed (pip list)."""
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         capture_output=True, text=True, check=True).stdout
    return {canonical(d["name"]): d["version"] for d in json.loads(out)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- what travels --------------------------------------------------------------------------------
def working_tree_bytes(root: Path = ROOT) -> int:
    """Tracked plus untracked-not-ignored files (and shared/ where the checkout has one)."""
    listed = set()
    for args in (["ls-files", "-z"], ["ls-files", "-z", "--others", "--exclude-standard"]):
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout
        listed.update(p for p in out.decode().split("\0") if p)
    total = sum(os.lstat(root / p).st_size for p in listed if os.path.lexists(root / p))
    shared = root / "shared"
    if shared.is_dir():
        total += sum(os.lstat(p).st_size for p in shared.rglob("*") if p.is_file() or p.is_symlink())
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def size_report(bundle: Path) -> dict:
    tree, carried = working_tree_bytes(), folder_bytes(bundle)
    return {"working_tree_bytes": tree, "bundle_bytes": carried, "total_bytes": tree + carried,
            "limit_bytes": LIMIT_BYTES, "fits": tree + carried <= LIMIT_BYTES}


def print_size(report: dict) -> None:
    mib = lambda n: n / 2**20  # noqa: E731
    print(f"travels: working tree {mib(report['working_tree_bytes']):.2f} MiB + bundle {mib(report['bundle_bytes']):.2f} MiB"
          f" = {mib(report['total_bytes']):.2f} MiB of {mib(report['limit_bytes']):.0f} MiB "
          f"({'fits' if report['fits'] else 'OVER THE LIMIT'}; {mib(report['limit_bytes'] - report['total_bytes']):+.2f} MiB left)")


# -- wheels --------------------------------------------------------------------------------------
def wheel_tags(filename: str) -> tuple[str, str, str]:
    """(python tag, abi tag, platform tag) of a wheel file name."""
    parts = filename[:-len(".whl")].split("-")
    return parts[-3], parts[-2], parts[-1]


def wheel_fits(filename: str, python_version: str) -> str | None:
    """None if the wheel installs on CPython ``python_version`` / manylinux x86_64, else why not."""
    py, abi, platform = wheel_tags(filename)
    major, minor = (int(x) for x in python_version.split("."))
    ok_py = any(t in (f"cp{major}{minor}", f"py{major}", f"py{major}{minor}") or
                (abi == "abi3" and t.startswith(f"cp{major}") and int(t[3:] or 0) <= minor) for t in py.split("."))
    if not ok_py or abi not in ("none", "abi3", f"cp{major}{minor}"):
        return f"{filename}: not for CPython {python_version} ({py}-{abi})"
    platforms = platform.split(".")
    if platforms != ["any"]:
        glibc = [tuple(map(int, m.groups())) for p in platforms if (m := re.match(r"manylinux_(\d+)_(\d+)_x86_64$", p))]
        legacy = [p for p in platforms if re.match(r"manylinux(1|2010|2014)_x86_64$", p)]
        if not (glibc or legacy):
            return f"{filename}: not a manylinux x86_64 wheel ({platform})"
        if glibc and min(glibc) > (2, 28):
            return f"{filename}: needs glibc {min(glibc)[0]}.{min(glibc)[1]} (more than 2.28)"
    return None


def download(requirement: str, pure: bool, python_version: str, cache: Path) -> Path:
    """The wheel for ``requirement`` (cached): cp<version> manylinux x86_64, or py3-none-any."""
    cache.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    pattern = re.compile(rf"^{re.escape(canonical(name).replace('-', '_'))}-{re.escape(version)}-.*\.whl$", re.I)
    platforms = ["any"] if pure else ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                                      "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
                                      "manylinux_2_12_x86_64", "manylinux1_x86_64", "any"]

    def found():
        return [p for p in cache.glob("*.whl") if pattern.match(p.name) and
                (not pure or p.name.endswith("-none-any.whl")) and wheel_fits(p.name, python_version) is None]

    if not found():
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                   python_version, "--implementation", "cp", *[a for p in platforms for a in ("--platform", p)],
                   "-d", str(cache), requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode or not found():
            raise SystemExit(f"could not download {requirement} for CPython {python_version} manylinux x86_64 "
                             f"(pip needs the package index here):\n{done.stderr[-2000:]}")
    return sorted(found())[0]


def metadata_requires(metadata: str) -> list[str]:
    """The ``Requires-Dist`` requirements of a distribution's METADATA text."""
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return metadata_requires(z.read(meta).decode())


def marker_env(python_version: str) -> dict:
    """Environment markers as the GPU machine evaluates them (Linux x86_64 CPython ``python_version``, no extra)."""
    return {"python_version": python_version, "python_full_version": python_version + ".3", "sys_platform": "linux",
            "platform_machine": "x86_64", "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "extra": ""}


def unmet_requirements(wheels: list[Path], python_version: str) -> list[str]:
    """Requirements of the bundled wheels (no extras; markers for Linux x86_64 CPython ``python_version``)
    that neither another bundled wheel nor the GPU image meets."""
    from packaging.requirements import Requirement

    env = marker_env(python_version)
    bundled = {canonical(w.name.split("-")[0]) for w in wheels}
    unmet = []
    for wheel in wheels:
        for text in requires_dist(wheel):
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonical(req.name)
            if name not in bundled and SAME_MODULE.get(name, name) not in GPU_IMAGE_PACKAGES:
                unmet.append(f"{wheel.name} needs {text}")
    return unmet


# -- archives ------------------------------------------------------------------------------------
def _xz_filters(preset: str, executable: bool) -> list[dict]:
    level = int(preset.rstrip("e")) | (lzma.PRESET_EXTREME if preset.endswith("e") else 0)
    lz = {"id": lzma.FILTER_LZMA2, "preset": level}
    if level & 0xFF >= 9:
        lz["dict_size"] = 128 * 2**20   # av's libraries are larger than the preset's 64 MiB window
    return ([{"id": lzma.FILTER_X86}] if executable else []) + [lz]


def _write_tar_xz(target: Path, members: list[tuple[str, Path]], preset: str, executable: bool) -> None:
    partial = target.with_suffix(".partial")
    with lzma.open(partial, "wb", format=lzma.FORMAT_XZ, filters=_xz_filters(preset, executable)) as xz, \
            tarfile.open(fileobj=xz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in members:
            info = tar.gettarinfo(str(path), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 315532800   # 1980-01-01: the earliest time a zip (the wheel again) can hold
            with open(path, "rb") as f:
                tar.addfile(info, f)
    os.replace(partial, target)


def _pack_wheel(wheel: Path, target: Path, preset: str) -> dict:
    """The wheel's files as <wheel file name>/<path> in a tar.xz (BCJ x86 filter for compiled wheels),
    debug sections stripped (what ``strip_debug`` returns)."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
        compiled = not wheel.name.endswith("-none-any.whl")
        stripped = strip_debug(Path(tmp), names) if compiled else {"files": 0, "bytes_removed": 0}
        _write_tar_xz(target, [(f"{wheel.name}/{n}", Path(tmp) / n) for n in names], preset, compiled)
    return stripped


def comfyui_files(tree: Path) -> list[str]:
    """The files of the trimmed tree (relative paths, sorted)."""
    out = []
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        if not path.is_file() or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        if rel.split("/")[0] in TRIM_DIRS or TOKENIZER_DATA.search(rel):
            continue
        out.append(rel)
    return out


def find_comfyui(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [ROOT / ".comfyui" / "ComfyUI-v0.28.2"]
    for tree in candidates:
        version = tree / "comfyui_version.py"
        if version.is_file() and f'"{COMFYUI_VERSION}"' in version.read_text():
            return tree
    raise SystemExit(f"no ComfyUI {COMFYUI_VERSION} tree at {', '.join(map(str, candidates))}: run `make setup` "
                     f"(it unpacks ../shared/comfyui/ComfyUI-v0.28.2.tar.gz) or pass --comfyui PATH")


def build(out: Path, python_version: str, preset: str, without: set[str], comfyui: str | None, cache: Path) -> dict:
    tree = find_comfyui(comfyui)
    chosen = [w for w in WHEELS if canonical(w[0].split("==")[0]) not in without]
    wheels = [download(req, pure, python_version, cache / f"cp{python_version.replace('.', '')}") for req, _, pure in chosen]
    bad = [why for w in wheels if (why := wheel_fits(w.name, python_version))]
    unmet = unmet_requirements(wheels, python_version)
    if bad or unmet:
        raise SystemExit("the wheels do not fit the GPU machine:\n  " + "\n  ".join(bad + unmet))
    files = comfyui_files(tree)
    strip = strip_tool()
    inputs = hashlib.sha256(json.dumps([BUNDLE_VERSION, strip, python_version, preset, [w.name for w in wheels],
                                        [sha256_file(w) for w in wheels],
                                        [(f, (tree / f).stat().st_size) for f in files]]).encode()).hexdigest()
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("inputs") == inputs and all((out / a["file"]).is_file() and (out / a["file"]).stat().st_size == a["bytes"]
                                                for a in old["archives"]):
            print(f"{out}: up to date ({len(old['wheels'])} wheels, ComfyUI {old['comfyui']['version']})")
            return old
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    jobs = [(w, out / "wheels" / f"{w.name}.tar.xz") for w in wheels]
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        biggest_first = sorted(jobs, key=lambda j: -j[0].stat().st_size)
        packed = {w.name: pool.submit(_pack_wheel, w, t, preset) for w, t in biggest_first}
        comfyui_archive = pool.submit(_write_tar_xz, out / "comfyui.tar.xz",
                                      [(f"ComfyUI/{f}", tree / f) for f in files], preset, False)
        stripped = {name: future.result() for name, future in packed.items()}
        comfyui_archive.result()
    archives = [{"file": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for p in sorted(out.rglob("*.tar.xz"))]
    manifest = {
        "bundle_version": BUNDLE_VERSION, "inputs": inputs, "python_version": python_version, "xz_preset": preset,
        "strip": strip,
        "comfyui": {"version": COMFYUI_VERSION, "source": str(tree), "files": len(files),
                    "bytes": sum((tree / f).stat().st_size for f in files),
                    "left_out": [f"{d}/" for d in TRIM_DIRS] + ["tokenizer vocabularies (comfy/**/*tokenizer/*.json|txt|model)"]},
        "wheels": [{"file": w.name, "requirement": req, "why": why, "bytes": w.stat().st_size, "sha256": sha256_file(w),
                    "unpacked_bytes": sum(i.file_size for i in zipfile.ZipFile(w).infolist()),
                    "debug_stripped": stripped[w.name]}
                   for w, (req, why, _) in zip(wheels, chosen)],
        "left_out_wheels": sorted(without),
        "archives": archives,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


# -- on the GPU machine --------------------------------------------------------------------------
def _unpack(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)


def restore(bundle: Path, dest: Path, python: str = sys.executable) -> dict:
    """Unpack the bundle into ``dest``: ``dest/ComfyUI`` and the wheels installed in ``dest/site``
    (done once per bundle: a stamp records the manifest it came from)."""
    manifest_text = (bundle / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    stamp = dest / "restored.json"
    paths = {"comfyui": str(dest / "ComfyUI"), "site": str(dest / "site")}
    if stamp.is_file() and json.loads(stamp.read_text()).get("manifest") == hashlib.sha256(manifest_text.encode()).hexdigest():
        return paths
    for archive in manifest["archives"]:
        if (bundle / archive["file"]).stat().st_size != archive["bytes"]:
            raise SystemExit(f"{bundle / archive['file']}: not the size the manifest records (rebuild the bundle)")
    if dest.exists():
        shutil.rmtree(dest)
    unpacked, wheels = dest / "unpacked", dest / "wheels"
    wheels.mkdir(parents=True)
    jobs = [(bundle / a["file"], dest if a["file"] == "comfyui.tar.xz" else unpacked) for a in manifest["archives"]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        list(pool.map(lambda job: _unpack(*job), jobs))
    for folder in sorted(unpacked.iterdir()):
        check_record(folder)
        with zipfile.ZipFile(wheels / folder.name, "w", zipfile.ZIP_STORED, strict_timestamps=False) as z:   # a wheel again, for pip
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                z.write(path, path.relative_to(folder).as_posix())
    shutil.rmtree(unpacked)
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--disable-pip-version-check", "--target", str(dest / "site"),
                           *map(str, sorted(wheels.glob("*.whl")))], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pip could not install the bundled wheels:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    shutil.rmtree(wheels)
    stamp.write_text(json.dumps({"manifest": hashlib.sha256(manifest_text.encode()).hexdigest(), **paths}))
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make the bundle (once; reused while its inputs are unchanged)")
    b.add_argument("--out", default=str(ROOT / ".gpu"))
    b.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.11: a twin for tests here)")
    b.add_argument("--preset", default="9e", help="xz preset (9e: smallest; 0: fastest)")
    b.add_argument("--without", action="append", default=[], help="leave a wheel out (e.g. comfy-kitchen)")
    b.add_argument("--comfyui", help="the ComfyUI v0.28.2 tree (default: .comfyui/ComfyUI-v0.28.2)")
    b.add_argument("--cache", default=str(ROOT / ".cache" / "gpu-wheels"), help="downloaded wheels")
    b.add_argument("--no-limit", action="store_true", help="do not fail over 64 MiB (a test twin)")
    r = sub.add_parser("restore", help="unpack and install the bundle (the GPU machine does this)")
    r.add_argument("--bundle", default=str(ROOT / ".gpu"))
    r.add_argument("--dest", required=True)
    s = sub.add_parser("size", help="what travels, against the 64 MiB limit")
    s.add_argument("--bundle", default=str(ROOT / ".gpu"))
    args = parser.parse_args(argv)
    if args.command == "restore":
        print(json.dumps(restore(Path(args.bundle), Path(args.dest))))
        return 0
    if args.command == "size":
        report = size_report(Path(args.bundle))
        print_size(report)
        return 0 if report["fits"] else 1
    out = Path(args.out)
    manifest = build(out, args.python_version, args.preset, {canonical(w) for w in args.without}, args.comfyui,
                     Path(args.cache))
    for archive in manifest["archives"]:
        print(f"  {archive['bytes'] / 2**20:7.2f} MiB  {archive['file']}")
    report = size_report(out)
    print_size(report)
    if not report["fits"] and not args.no_limit:
        print("the bundle does not fit: leave a wheel out (--without comfy-kitchen: the check then records fp8_scaled "
              "as not run) or make the working tree smaller", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
