"""The controlled synthetic-world experiment: (a) base, (b) naive injection, (c) IaD, (d) IaD's
training-free decoupler on (b)'s weights -- same held-out people, prompts and noise.

    python benchmarks/bench_synth_experiment.py                 # the published run (shipped world)
    python benchmarks/bench_synth_experiment.py --rebuild       # retrain the world first (~1 h: see docs/synth-world.md)
    python benchmarks/bench_synth_experiment.py --identities 8  # quicker
    python benchmarks/bench_synth_experiment.py --world DIR --against synthworld/assets/world
                                 # a variant build (e.g. another adapter layout) against the shipped one, paired
    python benchmarks/bench_synth_experiment.py --reference-rows
                                 # reference frames appended (Wan variants): identity on the video's rows or all rows
    python benchmarks/bench_synth_experiment.py --long-video
                                 # drift: 4x-length videos in context windows, per window and first vs last
    python benchmarks/bench_synth_experiment.py --compare-published [--reference-rows]
                                 # rerun the published default-weight experiment on this CPU and print the
                                 # largest difference of every number from docs/results/ (nothing written)

Prints the table side by side, every number with its 95 % interval (bootstrap over people,
synthworld/stats.py), the paired differences between systems and whether they are significant, the
goals (the regime: naive injection identifies, copies and loses the prompt; IaD: copy rate at most
half of naive's, >= 80 % of the lost action accuracy recovered, identity within 2 points), and the
leakage probe; writes docs/results/synth_experiment.json, per-frame plots and a sample sheet.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthworld import assets, build, experiment, long_video, real_clips, reference_rows, world  # noqa: E402
from synthworld import published as published_cmp  # noqa: E402

OUT = REPO / "docs" / "results"
COLOURS = {"base": (120, 120, 120), "naive": (214, 39, 40), "iad": (31, 119, 180), "naive_tf": (255, 127, 14)}
ROWS = [("action_accuracy", "action accuracy vs prompt", True), ("copy_rate", "copy rate vs reference (its expression or pose)", True),
        ("identity_accuracy", "identity accuracy (24-way)", True), ("face_sim", "FaceSim (cos to reference)", False),
        ("identity_stability", "identity stability (cos to centroid)", False),
        ("detection_rate", "face detection rate", True), ("motion_mean", "motion (Farneback px/frame)", False)]


def fmt(v, pct):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def fmt_ci(v, ci, pct):
    """A value with its 95 % interval: ``82.3 % [79.0, 85.4]``."""
    if not ci or not all(math.isfinite(x) for x in ci):
        return fmt(v, pct)
    lo, hi = (100 * x for x in ci) if pct else ci
    return f"{fmt(v, pct)} [{lo:.1f}, {hi:.1f}]" if pct else f"{fmt(v, pct)} [{lo:.3f}, {hi:.3f}]"


def table(results: dict, identities: int, comparisons: dict | None = None) -> str:
    systems = [s for s in experiment.SYSTEMS if s in results]
    head = "| metric | " + " | ".join(experiment.SYSTEM_NAMES[s] for s in systems) + " | IaD - naive |"
    lines = [head, "|" + "---|" * (len(systems) + 2)]
    for key, label, pct in ROWS:
        label = label.replace("24-way", f"{identities}-way")
        cells = [fmt_ci(results[s][key], results[s].get("ci95", {}).get(key), pct) for s in systems]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {diff_cell((comparisons or {}).get('iad - naive', {}).get(key), pct)} |")
    return "\n".join(lines)


def diff_cell(d: dict | None, pct: bool) -> str:
    """A paired difference with its interval; bold when the interval excludes 0 (significant)."""
    if not d or not math.isfinite(d["value"]):
        return "n/a"
    scale, unit = (100, " points") if pct else (1, "")
    lo, hi = (scale * x for x in d["ci95"])
    text = f"{scale * d['value']:+.{1 if pct else 3}f}{unit} [{lo:+.{1 if pct else 3}f}, {hi:+.{1 if pct else 3}f}]"
    return f"**{text}**" if d["significant"] else text


def comparison_table(comparisons: dict) -> str:
    """Paired differences (same people, prompts and noise) of the three goal metrics; bold: the 95 %
    interval excludes 0."""
    keys = [k for k, _, _ in ROWS[:3]]
    lines = ["| difference | " + " | ".join(label.replace(" (24-way)", "") for k, label, _ in ROWS[:3]) + " |", "|" + "---|" * 4]
    for name, d in comparisons.items():
        lines.append(f"| {name} | " + " | ".join(diff_cell(d[k], True) for k in keys) + " |")
    return "\n".join(lines)


GOAL_TEXT = {
    "naive_identity_accuracy": ("naive injection identifies the person", True),
    "naive_copy_rate": ("naive injection copies the reference", True),
    "naive_action_loss_points": ("naive injection loses action accuracy against base (points)", False),
    "base_action_accuracy": ("base model follows the prompt", True),
    "iad_copy_over_naive": ("IaD's copy rate / naive's", False),
    "iad_action_recovered_share": ("share of naive's lost action accuracy IaD recovers", False),
    "iad_identity_delta_points": ("IaD identity - naive identity (points)", False),
}


def goal_table(goals: dict) -> str:
    lines = ["| goal | target | result [95 % interval] | met? |", "|---|---|---|---|"]
    for name, g in goals.items():
        label, pct = GOAL_TEXT[name]
        target = f"{g['direction']} {fmt(g['target'], pct) if pct else g['target']}"
        if pct:
            result = fmt_ci(g["value"], g["ci95"], pct)
        elif not math.isfinite(g["value"]):
            result = "n/a"
        else:
            digits = 1 if name.endswith("_points") else 2
            lo, hi = g["ci95"]
            result = f"{g['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
        lines.append(f"| {label} | {target} | {result} | {'yes' if g['met'] else '**no**'} |")
    return "\n".join(lines)


def group_table(results: dict) -> str:
    """Copy rate and action accuracy by what the reference photo shows (an expression or a head pose)."""
    systems = [s for s in experiment.SYSTEMS if s in results]
    lines = ["| reference photo shows | cases | " + " | ".join(experiment.SYSTEM_NAMES[s] for s in systems)
             + " | IaD vs naive |", "|" + "---|" * (len(systems) + 3)]
    for group in experiment.REFERENCE_GROUPS:
        rows = {s: results[s]["by_reference"][group] for s in systems}
        cells = [f"copy {fmt_ci(r['copy_rate'], r.get('ci95', {}).get('copy_rate'), True)}, action "
                 f"{fmt_ci(r['action_accuracy'], r.get('ci95', {}).get('action_accuracy'), True)}" for r in rows.values()]
        versus = "n/a"
        if "naive" in rows and "iad" in rows:
            nv, ia = rows["naive"], rows["iad"]
            cut = f"{100 * (1 - ia['copy_rate'] / nv['copy_rate']):.0f} %" if nv["copy_rate"] > 0 else "n/a"
            versus = f"copy cut {cut}, action {100 * (ia['action_accuracy'] - nv['action_accuracy']):+.1f} points"
        cases = next(iter(rows.values()))["cases"]
        lines.append(f"| {group} | {cases} | " + " | ".join(cells) + f" | {versus} |")
    return "\n".join(lines)


def plots(results: dict, path: Path) -> None:
    from iad.plotting import Panel, Series, draw_panels

    x = list(range(world.FRAMES))
    panels = []
    for key, title, rng in (("action_accuracy", "action accuracy vs the prompt", (0, 1)),
                            ("copy_rate", "copy rate vs the reference photo's expression/pose", (0, 1)),
                            ("identity_accuracy", "identity accuracy (nearest held-out person)", (0, 1)),
                            ("face_sim", "FaceSim: cosine to the reference embedding", None)):
        series = [Series(experiment.SYSTEM_NAMES[s], x, [None if not math.isfinite(v) else v for v in r["per_frame"][key]],
                         COLOURS[s]) for s, r in results.items()]
        panels.append(Panel(title, series, y_range=rng))
    draw_panels(panels, x_max=world.FRAMES - 1, title="Synthetic world: per-frame metrics, held-out people").save(path)


def sample_sheet(samples: dict, cases: list, path: Path, per_group: int = 2) -> None:
    """Rows: for the first cases of each reference group (expression, head pose), the reference
    photo then each system's 9 frames."""
    from PIL import Image

    picked = [i for group in experiment.REFERENCE_GROUPS.values()
              for i in [j for j, c in enumerate(cases) if c.reference_action in group][:per_group]]
    rows = []
    for i in picked:
        ref = torch.from_numpy(experiment.photo(cases[i].identity, cases[i].reference_action)).permute(2, 0, 1).float() / 255
        for s, frames in samples.items():
            strip = torch.cat([ref] + [torch.ones(3, world.SIZE, 4)] + list(frames[i]), 2)
            rows.append(strip)
        rows.append(torch.ones(3, 4, rows[-1].shape[2]))
    img = torch.cat(rows, 1)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).resize((arr.shape[1] * 3, arr.shape[0] * 3), Image.NEAREST).save(path)


def compare_worlds(variant: str, reference: str, identities: int, steps: int, seed: int, systems: tuple) -> int:
    """The experiment in two builds of the world, paired: each system's variant - reference."""
    t0 = time.monotonic()
    cfg = experiment.ExperimentConfig(identities=identities, steps=steps, seed=seed)
    runs = {name: experiment.run(folder, cfg, systems) for name, folder in (("variant", variant), ("reference", reference))}
    diffs = experiment.between_worlds(runs["variant"]["_results"], runs["reference"]["_results"],
                                      runs["variant"]["_cases"], cfg)
    short = {"action_accuracy": "action", "copy_rate": "copy", "identity_accuracy": "identity"}
    print(f"\nvariant {variant} against reference {reference} ({identities} people x {cfg.prompts_per_identity} "
          "prompts, default weight; differences paired by person with 95 % bootstrap intervals, bold: significant)\n")
    print("| system | " + " | ".join(f"{v} variant / reference" for v in short.values())
          + " | " + " | ".join(f"{v} difference" for v in short.values()) + " |")
    print("|" + "---|" * (1 + 2 * len(short)))
    for s, d in diffs.items():
        v, r = runs["variant"]["results"][s], runs["reference"]["results"][s]
        print(f"| {experiment.SYSTEM_NAMES[s]} | " + " | ".join(f"{fmt(v[k], True)} / {fmt(r[k], True)}" for k in short)
              + " | " + " | ".join(diff_cell(d[k], True) for k in short) + " |")
    print(f"\nwall time {time.monotonic() - t0:.0f} s")
    return 0


def reference_rows_tables(out: dict) -> str:
    """The reference-rows experiment: each system with its intervals, then the paired differences."""
    systems = reference_rows.SYSTEMS
    lines = ["| metric | " + " | ".join(reference_rows.SYSTEM_NAMES[s] for s in systems) + " |",
             "|" + "---|" * (len(systems) + 1)]
    for key, label, pct in ROWS:
        label = label.replace("24-way", f"{out['config']['gallery_size']}-way")
        lines.append(f"| {label} | " + " | ".join(fmt_ci(out["results"][s][key], out["results"][s]["ci95"].get(key), pct)
                                                  for s in systems) + " |")
    lines += ["", "| paired difference | identity accuracy | copy rate | action accuracy | FaceSim |", "|---|---|---|---|---|"]
    for name, d in out["comparisons"].items():
        lines.append(f"| {name} | " + " | ".join(diff_cell(d[k], pct) for k, pct in (
            ("identity_accuracy", True), ("copy_rate", True), ("action_accuracy", True), ("face_sim", False))) + " |")
    decision = out["decision"]
    lines += ["", f"Decision: identity on the **{decision['identity_rows']}** (identity on every row adds identity: "
                  f"{decision['all_rows_gain_identity']}; costs action or adds copying: {decision['all_rows_cost_action_or_copy']})."]
    return "\n".join(lines)


def reference_rows_run(world_dir: str, identities: int, steps: int, seed: int, write: bool) -> int:
    cfg = experiment.ExperimentConfig(identities=identities, steps=steps, seed=seed)
    out = reference_rows.run(world_dir, cfg)
    text = reference_rows_tables(out)
    print("\n" + text + f"\n\nwall time {out['wall_s']} s")
    if write:
        (OUT / "synth_reference_rows.json").write_text(json.dumps(out, indent=1) + "\n")
        (OUT / "synth_reference_rows.md").write_text(text + "\n")
        print(f"wrote {OUT}/synth_reference_rows.json, synth_reference_rows.md")
    return 0


def compare_published(world_dir: str, rows: bool) -> int:
    """Rerun the published default-weight run (or the reference-rows one) and print, per kind of number
    and metric, the largest difference from the published JSON and whether it is within what another
    CPU type explains (synthworld/published.py); exit 1 if anything is beyond it."""
    import platform

    name = "synth_reference_rows.json" if rows else "synth_experiment.json"
    published = json.loads((OUT / name).read_text())
    cfg = experiment.ExperimentConfig()
    rerun = (reference_rows.run if rows else experiment.run)(world_dir, cfg)
    rerun = json.loads(json.dumps({k: v for k, v in rerun.items() if not k.startswith("_")}))
    keys = [k for k in ("results", "comparisons", "goals", "decision", "ci") if k in published]
    print(f"\nrerun of docs/results/{name} on {platform.processor() or platform.machine()} "
          f"(torch {torch.__version__}, dispatch {torch.backends.cpu.get_cpu_capability()}):")
    worst, beyond = {}, []
    for key in keys:
        worst.update(published_cmp.largest(published[key], rerun[key], (key,)))
        beyond += published_cmp.mismatches(published[key], rerun[key], (key,))
    if not worst:
        print("  every number exactly as published")
    for label, d in sorted(worst.items()):
        verdict = "within tolerance" if d.within else "BEYOND tolerance"
        print(f"  {label:40s} largest difference {d.size:.3g} ({verdict} {d.tolerance:g}) at {d.path}: "
              f"published {d.published!r}, rerun {d.rerun!r}")
    for line in beyond:
        print(f"  beyond: {line}")
    return 1 if beyond else 0


def long_video_tables(out: dict) -> str:
    """Per system: identity, copy and action overall and per window; last minus first window; drift."""
    c = out["config"]
    lines = [f"{c['frames']}-frame videos ({c['frames'] // c['trained_frames']}x the world's {c['trained_frames']}-frame "
             f"clips) in context windows of {c['window']} frames overlapping by {c['overlap']} ({c['schedule']}, "
             f"{c['fuse']} fusion), {out['ci']['people']} held-out people x {c['prompts_per_identity']} prompts; "
             "95 % bootstrap intervals over people.", "",
             "| system | window (frames) | identity | copy | action | FaceSim |", "|---|---|---|---|---|---|"]
    for s, name in out["systems"].items():
        r = out["results"][s]
        lines.append(f"| {name} | all {c['frames']} | " + " | ".join(
            fmt_ci(r[m]["value"], r[m]["ci95"], m != "face_sim") for m in long_video.WINDOW_METRICS) + " |")
        for w in out["per_window"][s]:
            lines.append(f"| | {w['frames'][0]}-{w['frames'][1]} | " + " | ".join(
                fmt_ci(w[m]["value"], w[m]["ci95"], m != "face_sim") for m in long_video.WINDOW_METRICS) + " |")
    lines += ["", "| system | last - first window: identity | copy | action | FaceSim | FaceSim slope per second | "
                  "FaceSim drop, first - last second |", "|---|---|---|---|---|---|---|"]
    for s, name in out["systems"].items():
        d, drift = out["last_minus_first_window"][s], out["drift"][s]
        lines.append(f"| {name} | " + " | ".join(diff_cell(d[m], m != "face_sim") for m in long_video.WINDOW_METRICS)
                     + " | " + " | ".join(f"{drift[k]['value']:+.4f} [{drift[k]['ci95'][0]:+.4f}, {drift[k]['ci95'][1]:+.4f}]"
                                          for k in ("slope_per_second", "drop")) + " |")
    return "\n".join(lines)


def long_video_plot(out: dict, path: Path) -> None:
    """The drift curve: identity accuracy and FaceSim per frame, each system, window starts marked."""
    from iad.plotting import Panel, Series, draw_panels

    frames = out["config"]["frames"]
    x = list(range(frames))
    panels = []
    for key, title, rng in (("identity_accuracy", "identity accuracy per frame (nearest held-out person)", (0, 1)),
                            ("face_sim", "FaceSim per frame (cosine to the reference)", None),
                            ("copy_rate", "copy rate per frame (the reference photo's expression or pose)", (0, 1))):
        series = [Series(long_video.SYSTEM_NAMES[s], x, out["per_frame"][s][key], COLOURS[s]) for s in out["systems"]]
        panels.append(Panel(title, series, y_range=rng, missing_x=[w[0] for w in out["windows"][1:]],
                            missing_label="window start"))
    draw_panels(panels, x_max=frames - 1, title=f"Synthetic world: {frames}-frame videos in context windows "
                                                f"(ticks: window starts)").save(path)


def long_video_run(world_dir: str, identities: int, steps: int, seed: int, write: bool) -> int:
    cfg = experiment.ExperimentConfig(identities=identities, steps=steps, seed=seed)
    out = long_video.run(world_dir, cfg)
    # a 4-person run of the same code, which tests/test_synth_long_video.py reruns in the suite
    out["smoke"] = long_video.run(world_dir, experiment.ExperimentConfig(identities=long_video.SMOKE_IDENTITIES,
                                                                           steps=steps, seed=seed))
    text = long_video_tables(out)
    print("\n" + text + f"\n\nwall time {out['wall_s']} s")
    if write:
        (OUT / "synth_long_video.json").write_text(json.dumps(out, indent=1) + "\n")
        (OUT / "synth_long_video.md").write_text(text + "\n")
        long_video_plot(out, OUT / "synth_long_video.png")
        print(f"wrote {OUT}/synth_long_video.json, synth_long_video.md, synth_long_video.png")
    return 0


def real_clips_run(world_dir: str, identities: int, seed: int, write: bool) -> int:
    out = real_clips.run(world_dir, experiment.ExperimentConfig(identities=identities, seed=seed))
    print(f"wall time {out['wall_s']} s")
    if write:
        (OUT / "synth_real_clips.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {OUT}/synth_real_clips.json")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default=str(assets.WORLD_DIR))
    parser.add_argument("--rebuild", action="store_true", help="retrain the world into --world first")
    parser.add_argument("--identities", type=int, default=experiment.ExperimentConfig.identities)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="2,3",
                        help="extra IaD Apply weights to sweep for (b)-(d) (comma-separated; '' for none)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/results/")
    parser.add_argument("--against", default=None, metavar="DIR",
                        help="also run the same experiment (people, prompts, noise) in the world built in DIR and print "
                             "each system's paired difference, --world minus DIR (e.g. a variant adapter layout against "
                             "the shipped one); implies --no-write")
    parser.add_argument("--systems", default=",".join(experiment.SYSTEMS),
                        help="systems to run (comma-separated: base, naive, iad, naive_tf)")
    parser.add_argument("--reference-rows", action="store_true",
                        help="the reference-frame experiment instead (synthworld/reference_rows.py): which token rows the "
                             "identity should reach when a Wan variant appends reference frames; writes "
                             "docs/results/synth_reference_rows.json/.md")
    parser.add_argument("--compare-published", action="store_true",
                        help="rerun the published default-weight experiment (with --reference-rows: that one) and print "
                             "the largest difference of every number from its JSON in docs/results/; writes nothing")
    parser.add_argument("--long-video", action="store_true",
                        help="the drift experiment instead (synthworld/long_video.py): 4x-length videos in context windows; "
                             "writes docs/results/synth_long_video.json/.md/.png")
    parser.add_argument("--real-clips", action="store_true",
                        help="the judges on real clips of the experiment's cases (the ceiling of its scores) and the "
                             "recognizer's spread by action (synthworld/real_clips.py); writes docs/results/synth_real_clips.json")
    args = parser.parse_args()
    if args.real_clips:
        return real_clips_run(args.world, args.identities, args.seed, not args.no_write)
    if args.long_video:
        return long_video_run(args.world, args.identities, args.steps, args.seed, not args.no_write)
    if args.compare_published:
        return compare_published(args.world, args.reference_rows)
    if args.reference_rows:
        return reference_rows_run(args.world, args.identities, args.steps, args.seed, not args.no_write)
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = sorted(set(systems) - set(experiment.SYSTEMS))
    if unknown:
        parser.error(f"--systems: unknown {unknown}; choose from {', '.join(experiment.SYSTEMS)}")
    if args.against:
        return compare_worlds(args.world, args.against, args.identities, args.steps, args.seed, systems)
    t0 = time.monotonic()
    build_s = None
    if args.rebuild:
        build_s = build.build_world(args.world)["total_s"]
    cfg = experiment.ExperimentConfig(identities=args.identities, steps=args.steps, seed=args.seed)
    out = experiment.run(args.world, cfg, systems)
    samples = out.pop("_samples")
    del out["_results"], out["_cases"]
    # the identity weight sweep: users raise the weight when the likeness is weak
    sweep = {}
    for weight in [float(w) for w in args.weights.split(",") if w.strip()]:
        run = experiment.run(args.world, experiment.ExperimentConfig(
            identities=args.identities, steps=args.steps, seed=args.seed, weight=weight), systems=("naive", "iad", "naive_tf"))
        for key in ("_samples", "_results", "_cases"):
            run.pop(key)
        sweep[str(weight)] = {"results": {s: {k: v for k, v in r.items() if k != "per_frame"} for s, r in run["results"].items()},
                              "comparisons": run["comparisons"], "goals": run["goals"]}
    out["weight_sweep"] = sweep
    leak = experiment.leakage_probe(args.world)
    out["leakage"] = leak
    out["build_s"] = build_s
    out["total_wall_s"] = round(time.monotonic() - t0, 1)
    out["torch_threads"] = torch.get_num_threads()
    print()
    print(table(out["results"], cfg.gallery_size, out["comparisons"]))
    print()
    print(group_table(out["results"]))
    print()
    print(comparison_table(out["comparisons"]))
    print()
    print(goal_table(out["goals"]))
    if sweep:
        print("\nidentity weight sweep (IaD Apply weight; copy / action / identity):")
        for weight, r in sweep.items():
            row = "  ".join(f"{s} {100 * v['copy_rate']:.1f} / {100 * v['action_accuracy']:.1f} / "
                            f"{100 * v['identity_accuracy']:.1f} %" for s, v in r["results"].items())
            print(f"  weight {weight}: {row}")
            print("    IaD - naive: " + ", ".join(f"{k} {diff_cell(r['comparisons']['iad - naive'][k], True)}"
                                                for k in ("copy_rate", "action_accuracy", "identity_accuracy")))
            print("    by reference: " + "; ".join(
                f"{group}: " + ", ".join(f"{s} copy {100 * v['by_reference'][group]['copy_rate']:.1f} / action "
                                         f"{100 * v['by_reference'][group]['action_accuracy']:.1f} %"
                                         for s, v in r["results"].items())
                for group in experiment.REFERENCE_GROUPS))
    print("\nleakage (linear probe of the per-frame action, held-out people; chance "
          f"{100 * leak['chance']:.1f} %):")
    for name, v in leak["probe"].items():
        print(f"  {name}: action probe {100 * v['action_probe_accuracy']:.1f} %, identity retrieval "
              f"{100 * v['identity_retrieval_top1']:.1f} %")
    print(f"\nwall time: experiment {out['wall_s']} s, total {out['total_wall_s']} s"
          + (f" (world build {build_s} s)" if build_s else ""))
    if not args.no_write:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "synth_experiment.json").write_text(json.dumps(out, indent=1) + "\n")
        plots(out["results"], OUT / "synth_per_frame.png")
        cases = experiment.make_cases(experiment.heldout_identities(args.world, args.identities, args.seed), args.seed,
                                      cfg.prompts_per_identity)
        sample_sheet(samples, cases, OUT / "synth_samples.png")
        (OUT / "synth_table.md").write_text("\n\n".join([table(out["results"], cfg.gallery_size, out["comparisons"]),
                                                         group_table(out["results"]), comparison_table(out["comparisons"]),
                                                         goal_table(out["goals"])]) + "\n")
        print(f"wrote {OUT}/synth_experiment.json, synth_per_frame.png, synth_samples.png, synth_table.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
