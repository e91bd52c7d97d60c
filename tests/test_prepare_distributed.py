"""``torchrun -m iad.prepare`` with 2 and 3 gloo processes on the CPU (one thread each): the output
folder is byte-identical to a one-process run's, every clip is prepared exactly once, a killed
rank is resumed (by the same command, or by another number of processes) without redoing the
shards the others finished, and a rank that does not see the output folder stops with a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import train_data
from harness.paths import REPO_ROOT

FAULTS = Path(__file__).resolve().parent / "harness" / "prepare_faults.py"
GOOD = [f"clip{n:02d}{'' if n % 2 else '.mp4'}" for n in range(6)]
BAD = ["broken.mp4", "broken2.mp4", "clip03x.mp4"]
# Natural order, 2 clips per shard: [broken2, broken] (both skipped: an empty shard), [clip00, clip01],
# [clip02, clip03], [clip03x (skipped), clip04], [clip05].
UNITS = [["broken2.mp4", "broken.mp4"], GOOD[0:2], GOOD[2:4], ["clip03x.mp4", GOOD[4]], [GOOD[5]]]


@pytest.fixture(scope="module")
def clips(comfy, tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare-distributed")
    folder = train_data.make_dataset(root / "clips", persons=3, clips_per_person=2, corrupt=True)
    broken = (folder / "broken.mp4").read_bytes()
    for name in ("broken2", "clip03x"):   # more unreadable clips, with captions
        (folder / f"{name}.mp4").write_bytes(broken[:100])
        (folder / f"{name}.txt").write_text("a broken clip")
    return folder


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """The one-process run (this process, as iad.prepare.run)."""
    import torch

    from iad.prepare import run

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("one-process") / "dataset"
    run(train_data.prepare_settings(clips, out))
    torch.set_num_threads(threads)
    return out


def _config(clips: Path, out: Path) -> Path:
    path = out.parent / f"{out.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(train_data.prepare_settings(clips, out)))
    return path


def _launch(nproc: int, config: Path, log: Path | None = None, **env) -> subprocess.CompletedProcess:
    """torchrun (standalone: a free port of its own) with nproc CPU processes; nproc 0: plain python."""
    script = ["-m", "iad.prepare"] if log is None and not env else [str(FAULTS)]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else []
    environ = {**os.environ, "OMP_NUM_THREADS": "1",   # the lane's own PYTHONPATH kept (its packages)
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
               **({"IAD_TEST_CLIP_LOG": str(log)} if log else {}), **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, *launcher, *script, str(config), "--no-progress"], cwd=REPO_ROOT,
                          env=environ, capture_output=True, text=True, timeout=300)


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-8000:]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _assert_same_as(reference: Path, out: Path) -> None:
    expected, got = _files(reference), _files(out)
    assert sorted(got) == sorted(expected)     # no plan.json, no temporary file left
    assert [name for name in expected if got[name] != expected[name]] == []


def _logged(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines()] if log.is_file() else []


def test_one_process_writes_the_planned_units_once_each(reference, clips):
    from iad.train.data import PreparedDataset

    info = json.loads((reference / "dataset.json").read_text())
    assert info["shards"] == [f"shard-{j:05d}" for j in range(len(UNITS))]
    seen = []
    for name, unit in zip(info["shards"], UNITS):
        shard = json.loads((reference / f"{name}.json").read_text())
        assert sorted([r["source"] for r in shard["clips"]] + [s["source"] for s in shard["skipped"]]) == sorted(unit)
        assert [r["key"] for r in shard["clips"]] == [f"c{k}" for k in range(len(shard["clips"]))]
        seen += [r["source"] for r in shard["clips"]]
    assert sorted(seen) == sorted(GOOD) == sorted(info["done"])                 # every clip exactly once
    assert sorted(s["source"] for s in info["skipped"]) == sorted(BAD + ["nocaption.mp4"])
    assert json.loads((reference / "shard-00000.json").read_text())["clips"] == []   # all skipped: an empty shard
    assert len(PreparedDataset(reference).clips) == len(GOOD)                        # the trainer reads it all


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(reference, clips, tmp_path):
    log = tmp_path / "clips.log"
    done = _launch(2, _config(clips, tmp_path / "dataset"), log)
    _ok(done)
    _assert_same_as(reference, tmp_path / "dataset")
    assert sorted(_logged(log)) == sorted(GOOD + BAD)                   # each clip prepared by one rank, once
    by_rank = {}
    for line in log.read_text().splitlines():
        by_rank.setdefault(int(line.split()[0]), []).append(line.split()[1])
    assert by_rank == {0: UNITS[0] + UNITS[2] + UNITS[4], 1: UNITS[1] + UNITS[3]}   # shards round-robin
    assert "[rank 1/2]" in done.stderr and done.stdout.count("iad.prepare:") == 1   # rank 0 reports for all


def _kill_then_resume(clips, tmp_path, nproc: int, die_after: int, wait_for: list[str], resume_nproc: int) -> Path:
    """Rank 1 of nproc dies when it starts its (die_after+1)-th clip, once the shards wait_for are written;
    then resume_nproc processes (0: plain python) run the same config."""
    out, log = tmp_path / "dataset", tmp_path / "killed.log"
    config = _config(clips, out)
    killed = _launch(nproc, config, log, IAD_TEST_DIE_RANK=1, IAD_TEST_DIE_AFTER=die_after,
                     IAD_TEST_DIE_WAIT_FOR=",".join(f"{name}.json" for name in wait_for))
    assert killed.returncode != 0 and (out / "plan.json").is_file()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*")}
    assert {f"{name}.json" for name in wait_for} <= set(finished)
    todo = [c for j, unit in enumerate(UNITS) if f"shard-{j:05d}.json" not in finished for c in unit]
    resumed_log = tmp_path / "resumed.log"
    _ok(_launch(resume_nproc, config, resumed_log))
    assert sorted(_logged(resumed_log)) == sorted(todo)                 # only the unfinished shards' clips
    assert {name: ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) for name in finished} == finished
    return out


@pytest.mark.slow
def test_a_killed_rank_is_resumed_by_the_same_command_without_redoing_the_others(reference, clips, tmp_path):
    # 2 ranks: rank 0 writes shards 0, 2, 4, rank 1 shards 1 and 3. Rank 1 dies when it starts shard 3,
    # once rank 0 has written shard 2.
    out = _kill_then_resume(clips, tmp_path, 2, die_after=2, wait_for=["shard-00001", "shard-00002"], resume_nproc=2)
    _assert_same_as(reference, out)


@pytest.mark.slow
def test_a_killed_run_of_three_is_finished_by_one_process(reference, clips, tmp_path):
    # 3 ranks: rank 0 writes shards 0 and 3, rank 1 shards 1 and 4, rank 2 shard 2. Rank 1 dies in its
    # first clip once the others are done; one plain process finishes exactly rank 1's shards.
    out = _kill_then_resume(clips, tmp_path, 3, die_after=0, wait_for=["shard-00000", "shard-00002", "shard-00003"],
                            resume_nproc=0)
    assert sorted(_logged(tmp_path / "resumed.log")) == sorted(UNITS[1] + UNITS[4])
    _assert_same_as(reference, out)


def test_a_rank_that_does_not_see_the_output_folder_stops_with_a_message(clips, tmp_path):
    done = _launch(2, _config(clips, tmp_path / "dataset"), IAD_TEST_OTHER_OUTPUT_RANK=1,
                   IAD_TEST_OTHER_OUTPUT=tmp_path / "elsewhere", IAD_TEST_SHARED_WAIT=2)
    assert done.returncode != 0
    assert "rank 1/2" in done.stderr and "does not see rank 0's" in done.stderr and "shared filesystem" in done.stderr


def test_onnxruntime_sessions_take_the_rank_gpu_and_cpu_threads():
    from iad.face_analysis import FaceAnalyzer
    from iad.face_analysis.providers import session_settings
    from harness import insightface_pack

    assert session_settings(["CPUExecutionProvider"]) == {}           # the defaults stay untouched
    gpu = session_settings(["CUDAExecutionProvider", "CPUExecutionProvider"], device_id=3)
    assert gpu == {"provider_options": [{"device_id": 3}, {}]}
    analyzer = FaceAnalyzer.load(str(insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)), det_size=128,
                                 cache=False, threads=1)
    sessions = [m.session for m in analyzer.models.values()]
    assert sessions and all(s.get_session_options().intra_op_num_threads == 1 for s in sessions)
