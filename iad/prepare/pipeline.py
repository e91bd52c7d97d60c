"""The data-preparation pipeline behind ``python -m iad.prepare``: ``PrepareConfig``, ``run`` and the
``Preparer``. What it reads and writes: the package docstring (``iad/prepare/__init__.py``)."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .shards import (DATASET_FILE, DATASET_FORMAT, FORMAT_VERSION, PROMPT_BANK_FILE, atomic_save_tensors,
                     atomic_write_text, trim_zero_padding, write_shard)
from .distributed import new_run_id
from .plan import (claim_clips, clip_entry, merge_finished, new_units, next_shard_index, read_plan, remove_plan, unit_result,
                   write_plan)

log = logging.getLogger("iad.prepare")

PROMPT_BANK_PATH = Path(__file__).resolve().parents[1] / "data" / "prompt_bank.txt"
# Settings that change what is written: resuming with different values would mix datasets.
_IDENTITY_FIELDS = ("resolution", "num_frames", "vae", "text_encoder", "face_pack", "det_size", "reference_gap",
                    "max_references", "frame_stride", "store_pixels", "action_text")
ACTION_TEXT_MEANS = ("token_mean", "padded_mean")


@dataclass
class PrepareConfig:
    input: str                                  # folder of clips + captions, or a public dataset's root
    output: str                                 # dataset folder (created; resumed if it exists)
    vae: str                                    # Wan VAE file (ComfyUI/models/vae/...)
    text_encoder: dict = field(default_factory=lambda: {"kind": "comfy", "path": "", "type": "wan"})
    face_pack: str = "antelopev2"               # insightface pack name or folder
    face_search_roots: list[str] = field(default_factory=list)   # folders holding models/<pack> (default: ComfyUI's)
    face_provider: str = "auto"
    det_size: int = 640
    min_det_score: float = 0.5
    resolution: list[int] = field(default_factory=lambda: [832, 480])   # [width, height] of the latents
    num_frames: int = 33                        # target window length (Wan: 4k + 1)
    frame_stride: int = 1                       # use every n-th source frame
    store_pixels: bool = False                  # also keep the target window's frames (uint8): iad.train's mode 'vae' needs them
    min_track_frames: int = 4
    min_face_px: float = 24.0
    identity_threshold: float = 0.5
    reference_gap: int = 4                      # frames between the target window and any reference
    max_references: int = 4
    clips_per_shard: int = 64
    comfyui_dir: str | None = None
    prompt_bank: str | None = None              # default: iad/data/prompt_bank.txt
    progress: bool = True
    cpu_threads: int = 0                        # torch, onnxruntime and OpenCV threads per process (0: defaults)
    input_format: str = "folder"                # folder | consisid | opens2v (iad/prepare/sources)
    # k.action_text, the Text Alignment Loss's input: the mean of the phrase's rows before the encoder's
    # zero padding ("token_mean"); "padded_mean" (the mean over all of umt5's 512 rows, scaled by the
    # phrase's length) only to add clips to a dataset prepared before this setting, which made it so
    action_text: str = "token_mean"
    # put before each clip's name in the dataset (e.g. "celebv-hq/"): a second input folder whose clips
    # are named like the first one's then adds them beside those instead of being refused
    clip_prefix: str = ""

    def __post_init__(self) -> None:
        from .sources import layout_problem

        problems = []
        try:
            problem = layout_problem(self.input, self.input_format)
        except ValueError as exc:   # an unknown input_format
            problem = str(exc)
        if problem:
            problems.append(problem)
        if self.text_encoder.get("kind", "comfy") == "comfy" and not Path(self.text_encoder.get("path", "")).is_file():
            problems.append(f"text_encoder.path {self.text_encoder.get('path')!r} is not a file (the umt5-xxl file from "
                            "ComfyUI/models/text_encoders; or use {\"kind\": \"hash\"} for a dry run)")
        if not Path(self.vae).is_file():
            problems.append(f"vae {self.vae!r} is not a file (the Wan VAE from ComfyUI/models/vae)")
        if len(self.resolution) != 2 or any(int(r) % 16 for r in self.resolution):
            problems.append(f"resolution must be [width, height], multiples of 16, got {self.resolution}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            problems.append(f"num_frames must be 4k+1 (Wan's VAE compresses time by 4), got {self.num_frames}")
        if self.frame_stride < 1 or self.clips_per_shard < 1 or self.max_references < 1:
            problems.append("frame_stride, clips_per_shard and max_references must be >= 1")
        if not isinstance(self.clip_prefix, str) or not self.clip_prefix.isprintable():
            problems.append(f"clip_prefix must be printable text (e.g. \"celebv-hq/\"), got {self.clip_prefix!r}")
        if self.action_text not in ACTION_TEXT_MEANS:
            problems.append(f"action_text must be one of {list(ACTION_TEXT_MEANS)}, got {self.action_text!r}")
        if problems:
            raise ValueError("invalid preparation settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict) -> "PrepareConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preparation settings {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class ClipSource:
    path: Path
    caption: str
    action: str | None
    person: str | None
    prefix: str = ""      # PrepareConfig.clip_prefix

    @property
    def key(self) -> str:
        return self.prefix + self.path.name

    def fingerprint(self) -> str:
        if self.path.is_dir():
            files = sorted(self.path.iterdir())
            return f"{len(files)}:{sum(f.stat().st_size for f in files)}"
        st = self.path.stat()
        return f"{st.st_size}:{int(st.st_mtime)}"


class ClipSkipped(Exception):
    """This clip cannot be used; the message is the reason written to the report."""


def _read_captions_file(folder: Path) -> dict[str, dict]:
    table: dict[str, dict] = {}
    if (folder / "captions.json").is_file():
        for name, value in json.loads((folder / "captions.json").read_text(encoding="utf-8")).items():
            table[name] = value if isinstance(value, dict) else {"caption": value}
    if (folder / "captions.jsonl").is_file():
        for line in (folder / "captions.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                table[row.pop("clip")] = row
    return table


def discover_clips(folder: str | os.PathLike) -> tuple[list[ClipSource], list[dict]]:
    """Clips with captions, and ``{"source", "reason"}`` for the ones without."""
    from ..eval.video_io import is_video_source, natural_key

    folder = Path(folder)
    table = _read_captions_file(folder)
    clips, skipped = [], []
    for path in sorted(folder.iterdir(), key=natural_key):
        if path.name.startswith(".") or not is_video_source(path):
            continue
        meta = dict(table.get(path.name) or table.get(path.stem) or {})
        sidecar_json, sidecar_txt = path.with_suffix(".json") if path.is_file() else path.parent / f"{path.name}.json", \
            path.with_suffix(".txt") if path.is_file() else path.parent / f"{path.name}.txt"
        if sidecar_json.is_file():
            meta.update(json.loads(sidecar_json.read_text(encoding="utf-8")))
        if sidecar_txt.is_file():
            meta.setdefault("caption", sidecar_txt.read_text(encoding="utf-8").strip())
        caption = str(meta.get("caption", "")).strip()
        if not caption:
            skipped.append({"source": path.name, "reason": f"no caption (add {path.stem}.txt or an entry in captions.json)"})
            continue
        clips.append(ClipSource(path, caption, meta.get("action"), None if meta.get("person") is None else str(meta["person"])))
    return clips, skipped


def load_prompt_bank(path: str | os.PathLike | None = None) -> list[str]:
    lines = Path(path or PROMPT_BANK_PATH).read_text(encoding="utf-8").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompt bank {path or PROMPT_BANK_PATH} has no prompts")
    return prompts


def _fit(frames: np.ndarray, width: int, height: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Centre-crop to the target aspect, resize; returns frames and (scale, x0, y0) for boxes."""
    import cv2

    h, w = frames.shape[1:3]
    scale = max(width / w, height / h)
    new_w, new_h = max(width, int(math.ceil(w * scale))), max(height, int(math.ceil(h * scale)))
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    out = np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
                    [y0:y0 + height, x0:x0 + width] for f in frames])
    return out, (scale, float(x0), float(y0))


def choose_window(num_source: int, length: int, track_frames: list[int], gap: int) -> tuple[int, list[int]]:
    """Target window start and the track frames usable as references (>= gap frames outside it).
    Tries the window at the end and at the start of the clip; keeps the one that leaves more
    references and covers more faces (end first on ties: references from earlier moments)."""
    best = None
    for start in dict.fromkeys((num_source - length, 0)):
        end = start + length
        refs = [f for f in track_frames if f < start - gap or f >= end + gap]
        covered = sum(start <= f < end for f in track_frames)
        score = (min(len(refs), 1), covered, len(refs))
        if best is None or score > best[0]:
            best = (score, start, refs)
    return best[1], best[2]


class Preparer:
    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        self.out = Path(config.output)

    # -- models (loaded lazily: a resumed run with nothing left loads nothing) --------------------
    def _load_models(self, ranks, faces_and_vae: bool = True) -> None:
        """The text encoder (prompt bank and captions); the face pack and the VAE only for clips.
        A torchrun rank runs on its own GPU (LOCAL_RANK); CPU threads: ``cpu_threads``, else
        torch's (torchrun sets OMP_NUM_THREADS=1) for onnxruntime too when there are several ranks."""
        import cv2

        from ..face_analysis import FaceAnalyzer
        from .encoders import ComfyVAE, load_text_encoder

        c = self.config
        if c.cpu_threads > 0:
            torch.set_num_threads(c.cpu_threads)
            cv2.setNumThreads(c.cpu_threads)
        gpu = ranks.use_device()   # before ComfyUI is imported: its loaders use torch's current device
        self.text_encoder = load_text_encoder(c.text_encoder, c.comfyui_dir)
        if faces_and_vae:
            threads = c.cpu_threads or (torch.get_num_threads() if ranks.world > 1 else 0)
            self.analyzer = FaceAnalyzer.load(c.face_pack, c.face_search_roots or None, provider=c.face_provider,
                                              det_size=c.det_size, device_id=gpu or 0, threads=threads)
            self.vae = ComfyVAE(c.vae, c.comfyui_dir)

    def _settings(self) -> dict:
        c = asdict(self.config)
        return {k: c[k] for k in _IDENTITY_FIELDS}

    def _load_state(self) -> dict:
        path = self.out / DATASET_FILE
        if not path.is_file():
            return {"format": DATASET_FORMAT, "format_version": FORMAT_VERSION, "settings": self._settings(),
                    "shards": [], "done": {}, "skipped": [], "embedder": None, "text_encoder_name": None,
                    "latent_shape": None, "inputs": [], "clip_prefixes": [], "origin": {}}
        state = json.loads(path.read_text(encoding="utf-8"))
        state.setdefault("settings", {}).setdefault("store_pixels", False)   # datasets from before the setting
        state["settings"].setdefault("action_text", "padded_mean")             # ditto
        if state.get("settings") != self._settings():
            changed = [k for k in _IDENTITY_FIELDS if state.get("settings", {}).get(k) != self._settings()[k]]
            raise ValueError(f"{self.out} was prepared with different settings ({', '.join(changed)}); resuming would "
                             "mix incompatible clips. Use a new output folder, or the original settings.")
        return state

    def _save_state(self, state: dict) -> None:
        atomic_write_text(self.out / DATASET_FILE, json.dumps(state, indent=1))

    # -- one clip -------------------------------------------------------------------------------
    def process(self, clip: ClipSource, index: str) -> tuple[dict[str, torch.Tensor], dict]:
        from ..eval.video_io import VideoReadError
        from .sources import load_clip_frames, pick_primary_track, record_fields
        from .tracks import TrackPoint, link_tracks, validate_tracks

        c = self.config
        try:   # only the clip's frame range of its video (public datasets), cropped; else the whole video
            loaded = load_clip_frames(clip, c.frame_stride)
        except VideoReadError as exc:
            raise ClipSkipped(f"unreadable video: {exc}") from None
        frames = loaded.frames
        if len(frames) < c.num_frames:
            raise ClipSkipped(f"too short: {len(frames)} frames (after frame_stride {c.frame_stride}), the target window "
                              f"needs {c.num_frames}")
        detections: dict[int, list] = {}
        for i, frame in enumerate(frames):
            faces = self.analyzer.detect(frame, min_score=c.min_det_score, retry=False, landmarks=True, image_index=i)
            detections[i] = [TrackPoint(i, f.bbox, f.kps, f.det_score, f.embedding, f.landmark_2d_106, f.aligned_crop)
                             for f in faces]
        tracks = link_tracks(detections)
        good = validate_tracks(tracks, c.min_track_frames, c.min_face_px, c.identity_threshold)
        dropped = [{"track": t.track_id, "frames": len(t.points), "reason": t.drop_reason} for t in tracks if t.drop_reason]
        for d in dropped:
            log.info("%s: dropped face track %d (%s)", clip.key, d["track"], d["reason"])
        if not good:
            reasons = "; ".join(d["reason"] for d in dropped) or "no face detected in any frame"
            raise ClipSkipped(f"no usable face track ({reasons})")
        track = pick_primary_track(good, clip, loaded)   # the dataset's annotated person, else the first
        start, ref_frames = choose_window(len(frames), c.num_frames, track.frames, c.reference_gap)
        window = frames[start:start + c.num_frames]
        width, height = (int(r) for r in c.resolution)
        fitted, (scale, x0, y0) = _fit(window, width, height)
        latents = self.vae.encode(fitted)
        by_frame = {p.frame: p for p in track.points}
        target_boxes = np.full((c.num_frames, 4), np.nan, np.float32)
        for j in range(c.num_frames):
            p = by_frame.get(start + j)
            if p is not None:
                target_boxes[j] = p.bbox * scale - np.array([x0, y0, x0, y0], np.float32)
        if len(ref_frames) > c.max_references:   # evenly spaced over the other moments
            pick = np.linspace(0, len(ref_frames) - 1, c.max_references).round().astype(int)
            ref_frames = [ref_frames[i] for i in pick]
        refs = [by_frame[f] for f in ref_frames]
        crop_size = self.analyzer.crop_size
        text = self.text_encoder(clip.caption)
        action_rows = self.text_encoder(clip.action) if clip.action else text
        if c.action_text == "token_mean":   # not diluted by padding: every phrase's mean at one scale
            action_rows = trim_zero_padding(action_rows)
        action_text = action_rows.float().mean(0)
        pts = track.points
        t = {
            "latents": latents.float(),
            "text": trim_zero_padding(text.to(torch.float16)),     # text_tokens below keeps the padded length
            "action_text": action_text.float(),
            "track.frames": torch.tensor([p.frame for p in pts], dtype=torch.int64),
            "track.bboxes": torch.from_numpy(np.stack([p.bbox for p in pts]).astype(np.float32)),
            "track.kps": torch.from_numpy(np.stack([p.kps for p in pts]).astype(np.float32)),
            "track.scores": torch.tensor([p.score for p in pts], dtype=torch.float32),
            "track.embeddings": torch.stack([p.embedding.float() for p in pts]),
            "track.landmarks": torch.from_numpy(np.stack([p.landmarks if p.landmarks is not None else np.zeros((106, 2))
                                                          for p in pts]).astype(np.float32)),
            "target.frames": torch.arange(start, start + c.num_frames, dtype=torch.int64),
            "target.bboxes": torch.from_numpy(target_boxes),
            "ref.frames": torch.tensor(ref_frames, dtype=torch.int64),
            "ref.embeddings": torch.stack([p.embedding.float() for p in refs]) if refs else torch.zeros(0, pts[0].embedding.numel()),
            "ref.crops": torch.from_numpy(np.stack([p.crop for p in refs])) if refs else torch.zeros(0, crop_size, crop_size, 3, dtype=torch.uint8),
        }
        if c.store_pixels:   # exactly the frames the latents encode
            t["target.pixels"] = torch.from_numpy(np.ascontiguousarray(fitted, dtype=np.uint8))
        tensors = {f"{index}.{k}": v for k, v in t.items()}
        record = {
            "key": index, "source": clip.key, "caption": clip.caption, "action": clip.action,
            "person": clip.person, "source_frames": int(len(frames)), "fps": loaded.fps,
            "window": [int(start), int(start + c.num_frames)], "primary_track": track.track_id,
            "track_frames": len(pts), "references": len(refs), "dropped_tracks": dropped,
            "text_tokens": int(text.shape[0]), "landmarks": bool(pts[0].landmarks is not None),
            **record_fields(clip, loaded, (start, start + c.num_frames)),
        }
        return tensors, record

    # -- the whole folder, on one process or many (iad/prepare/distributed.py) -------------------
    def run(self) -> dict:
        from .distributed import Ranks

        ranks = Ranks.from_environment()
        try:
            return self._run(ranks)
        finally:
            ranks.close()

    def _run(self, ranks) -> dict:
        from tqdm import tqdm

        from .distributed import check_clips_visible, share_plan, wait_for_shards

        c = self.config
        job = share_plan(ranks, self._plan, self.out, self._settings())
        mine = job["todo"][ranks.rank::ranks.world]
        clips = [[self._clip(e) for e in unit["clips"]] for unit in mine]
        check_clips_visible(ranks, [clip.path for unit in clips for clip in unit])
        log.info("%s: %d of %d shards to write (%d clips)", ranks.tag, len(mine), len(job["todo"]), sum(map(len, clips)))
        bank = ranks.main and not (self.out / PROMPT_BANK_FILE).is_file()
        if mine or bank:
            self._load_models(ranks, faces_and_vae=bool(mine))
        if bank:
            self._write_prompt_bank()
            self._state["text_encoder_name"] = getattr(self.text_encoder, "name", "?")
        bar = tqdm(total=sum(map(len, clips)), desc=f"iad.prepare {ranks.tag}" if ranks.world > 1 else "iad.prepare",
                   unit="clip", disable=not c.progress)
        for unit, unit_clips in zip(mine, clips):
            self._prepare_unit(unit, unit_clips, bar)
            if ranks.main:   # progress into the index as far as the plan is finished
                self._merge()
        bar.close()
        ranks.barrier()   # every unit is written
        if ranks.main:
            left = wait_for_shards(ranks, self._merge)
            self._save_state(self._state)
            if left:
                raise RuntimeError(f"shards {[u['shard'] for u in left]} were planned but not written; run again to "
                                   "finish them")
            remove_plan(self.out)
        ranks.barrier()   # the index is complete
        return self._state if ranks.main else self._load_state()

    def _plan(self) -> dict:
        """Rank 0: the index so far, the units of an unfinished run plus units for new clips (both
        written before any unit starts), and the units still to do."""
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        settings = self._settings()
        from .sources import discover

        found, no_caption = discover(c.input, c.input_format)
        for clip in found:
            clip.prefix = c.clip_prefix
        no_caption = [{**s, "source": c.clip_prefix + s["source"]} for s in no_caption]
        known_skips = {s["source"]: s for s in state["skipped"]}
        state["skipped"] += [s for s in no_caption if s["source"] not in known_skips]
        units = merge_finished(self.out, state, read_plan(self.out, settings))
        entries = {clip.key: clip_entry(clip, c.input) for clip in found}
        claim_clips(state, entries, {e["source"]: e["fingerprint"] for u in units for e in u["clips"]}, c.input, self.out,
                    c.clip_prefix)
        units = [u if unit_result(self.out, u) else {**u, "clips": [entries[e["source"]] for e in u["clips"]
                                                                   if e["source"] in entries]} for u in units]
        planned = {e["source"] for u in units for e in u["clips"]}
        pending = [clip for clip in found if clip.key not in planned
                   and state["done"].get(clip.key) != entries[clip.key]["fingerprint"]
                   and known_skips.get(clip.key, {}).get("fingerprint") != entries[clip.key]["fingerprint"]]
        units += new_units(pending, c.clips_per_shard, next_shard_index(state["shards"], units), c.input)
        todo = [u for u in units if unit_result(self.out, u) is None]
        log.info("%d clips found, %d already prepared or planned, %d to do in %d shards", len(found),
                 len(found) - sum(len(u["clips"]) for u in todo), sum(len(u["clips"]) for u in todo), len(todo))
        run_id = new_run_id()
        self._state, self._units = state, units
        self._save_state(state)
        write_plan(self.out, settings, run_id, units)
        return {"run": run_id, "settings": settings, "todo": todo}

    def _merge(self) -> list[dict]:
        """Rank 0: finished units into the index (saved when it changed); returns the units left."""
        before = len(self._state["shards"])
        self._units = merge_finished(self.out, self._state, self._units)
        if len(self._state["shards"]) != before:
            self._save_state(self._state)
        return self._units

    def _clip(self, entry: dict) -> ClipSource:
        from .sources import clip_from_entry   # a dataset reader's clip comes back with its range, crop and boxes

        return clip_from_entry(entry, self.config.input)

    def _prepare_unit(self, unit: dict, clips: list[ClipSource], bar) -> None:
        """One unit into its shard: the clips prepared, and the skipped ones with the reason."""
        tensors: dict[str, torch.Tensor] = {}
        records, skipped = [], []
        for clip, entry in zip(clips, unit["clips"]):
            key = f"c{len(records)}"
            try:
                clip_tensors, record = self.process(clip, key)
            except ClipSkipped as exc:
                log.warning("skipped %s: %s", clip.key, exc)
                skipped.append({"source": clip.key, "reason": str(exc), "fingerprint": entry["fingerprint"]})
            else:
                tensors.update(clip_tensors)
                records.append(record)
            bar.update(1)
            bar.set_postfix(skipped=len(skipped))
        write_shard(self.out, int(unit["shard"].rsplit("-", 1)[1]), tensors, records, skipped=skipped,
                    embedder=self.analyzer.embedder, text_encoder_name=getattr(self.text_encoder, "name", "?"))

    def _write_prompt_bank(self) -> None:
        prompts = load_prompt_bank(self.config.prompt_bank)
        padded = {f"bank.{i}": self.text_encoder(p).to(torch.float16) for i, p in enumerate(prompts)}
        padded["null"] = self.text_encoder("").to(torch.float16)
        # stored as the captions are: without the encoder's zero rows, their count in the metadata
        lengths = {k: int(t.shape[0]) for k, t in padded.items()}
        atomic_save_tensors(self.out / PROMPT_BANK_FILE, {k: trim_zero_padding(t) for k, t in padded.items()},
                            {"prompts": json.dumps(prompts), "text_tokens": json.dumps(lengths)})


def run(config: PrepareConfig | dict) -> dict:
    """Prepare (or resume preparing) a dataset; returns the dataset description (dataset.json)."""
    if isinstance(config, dict):
        config = PrepareConfig.from_dict(config)
    return Preparer(config).run()


__all__ = ["PrepareConfig", "Preparer", "run", "discover_clips", "load_prompt_bank", "choose_window", "ClipSkipped"]
