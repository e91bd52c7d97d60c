"""Per-frame curves of an evaluation as an image, drawn with Pillow.

Pillow ships with ComfyUI (and every Python imaging stack); matplotlib would be a ~40 MB
dependency of the node pack for three line charts, so we draw them directly.
Panels: identity (FaceSim per frame, red ticks where no face was found, the drift's trend line and
each window's mean for a video made in windows), expression distance to
the reference (copy threshold dashed: below it the frame copies the photo), motion (Farneback
mean and top-5 % magnitude per frame pair, the dynamic-degree threshold dashed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WIDTH, PANEL_HEIGHT = 960, 210
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 150, 30, 26
BACKGROUND, AXIS, GRID, TEXT = (255, 255, 255), (60, 60, 60), (225, 225, 225), (20, 20, 20)
MISSING = (220, 40, 40)


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    colour: tuple[int, int, int]


@dataclass
class Panel:
    title: str
    series: list[Series]
    y_label: str = ""
    y_range: tuple[float, float] | None = None
    hline: tuple[float, str] | None = None      # (value, label)
    missing_x: Sequence[float] = ()             # x positions marked "no face"
    missing_label: str = "no face"              # the marks' legend (other uses: window starts)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step + 1e-9) + 1)]


def _draw_panel(draw, panel: Panel, top: int, x_max: float) -> None:
    font, small = _font(14), _font(11)
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    y0, y1 = top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM
    values = [v for s in panel.series for v in s.y if v is not None and math.isfinite(v)]
    if panel.hline:
        values.append(panel.hline[0])
    lo, hi = panel.y_range if panel.y_range else ((min(values), max(values)) if values else (0.0, 1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    if not panel.y_range:
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    x_span = max(x_max, 1.0)
    px = lambda x: left + (right - left) * (x / x_span)  # noqa: E731
    py = lambda y: y1 - (y1 - y0) * ((min(max(y, lo), hi) - lo) / (hi - lo))  # noqa: E731

    draw.text((left, top + 6), panel.title, fill=TEXT, font=font)
    for tick in _nice_ticks(lo, hi):
        y = py(tick)
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((left - 6, y), f"{tick:.3g}", fill=TEXT, font=small, anchor="rm")
    for tick in _nice_ticks(0, x_span, 8):
        x = px(tick)
        draw.line([(x, y1), (x, y1 + 4)], fill=AXIS)
        draw.text((x, y1 + 6), f"{tick:.0f}", fill=TEXT, font=small, anchor="mt")
    draw.rectangle([left, y0, right, y1], outline=AXIS)
    if panel.y_label:
        draw.text((8, (y0 + y1) / 2), panel.y_label, fill=TEXT, font=small, anchor="lm")
    if panel.hline:
        value, label = panel.hline
        y = py(value)
        for xs in range(left, right, 12):
            draw.line([(xs, y), (min(xs + 6, right), y)], fill=(110, 110, 110), width=1)
        draw.text((right - 4, y - 3), label, fill=(90, 90, 90), font=small, anchor="rb")
    for x in panel.missing_x:
        draw.line([(px(x), y1 - 10), (px(x), y1)], fill=MISSING, width=2)
    legend_y = y0
    for series in panel.series:
        points = [(px(x), py(y)) if y is not None and math.isfinite(y) else None for x, y in zip(series.x, series.y)]
        run: list = []
        for point in points + [None]:
            if point is None:
                if len(run) > 1:
                    draw.line(run, fill=series.colour, width=2)
                run = []
            else:
                run.append(point)
        for point in points:
            if point is not None and len(points) <= 120:
                draw.ellipse([point[0] - 2, point[1] - 2, point[0] + 2, point[1] + 2], fill=series.colour)
        draw.rectangle([right + 6, legend_y + 16, right + 18, legend_y + 24], fill=series.colour)
        draw.text((right + 22, legend_y + 20), series.label, fill=TEXT, font=small, anchor="lm")
        legend_y += 16
    if panel.missing_x:
        draw.rectangle([right + 6, legend_y + 16, right + 18, legend_y + 24], fill=MISSING)
        draw.text((right + 22, legend_y + 20), panel.missing_label, fill=TEXT, font=small, anchor="lm")


def draw_panels(panels: Sequence[Panel], x_max: float, title: str = ""):
    """A PIL RGB image with the panels stacked vertically, sharing the frame axis."""
    from PIL import Image, ImageDraw

    header = 28 if title else 0
    image = Image.new("RGB", (WIDTH, header + PANEL_HEIGHT * len(panels) + 18), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((MARGIN_LEFT, 8), title, fill=TEXT, font=_font(15))
    for k, panel in enumerate(panels):
        _draw_panel(draw, panel, header + k * PANEL_HEIGHT, x_max)
    draw.text(((MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2, image.height - 10), "frame", fill=TEXT, font=_font(12),
              anchor="mm")
    return image


def report_panels(report) -> list[Panel]:
    """The three panels of an ``iad.eval.evaluate.EvaluationReport``."""
    fs = report.facesim
    series = [Series("FaceSim", fs.frame_indices, fs.per_frame, (30, 90, 200))]
    drift = getattr(report, "drift", None)
    drift_text = ""
    if drift is not None and math.isfinite(drift.slope_per_second):
        # the drift's trend line and, for a video made in windows, each window's mean as a step
        ends = [0, max(report.num_frames - 1, 0)]
        series.append(Series("trend", ends, [drift.trend(x) for x in ends], (120, 120, 120)))
        lo, hi = drift.slope_ci95
        drift_text = f"; drift {drift.slope_per_second:+.3f}/s [{_fmt(lo)}, {_fmt(hi)}], drop {_fmt(drift.drop)}"
    if drift is not None and drift.windows:
        xs, ys = [], []
        for w in drift.windows:
            xs += [w.start, w.end, w.end]
            ys += [w.mean, w.mean, None]
        series.append(Series("window mean", xs, ys, (230, 140, 0)))
        if drift.worst_window is not None:
            drift_text += f", worst window {drift.windows[drift.worst_window].start}-{drift.windows[drift.worst_window].end}"
    identity = Panel(
        f"identity: FaceSim mean {_fmt(fs.mean)}, min {_fmt(fs.min)}, face in {fs.face_fraction:.0%}{drift_text}",
        series, y_label="cos", y_range=(min(0.0, _finite_min(fs.per_frame, 0.0)), 1.0), missing_x=fs.frames_without_face,
    )
    if report.expression is not None:
        e = report.expression
        expression = Panel(
            f"expression distance to reference: copy-paste rate {_fmt_pct(e.copy_rate)}, variability {_fmt(e.variability)}",
            [Series("distance", e.frame_indices, e.per_frame_distance, (200, 110, 20))],
            y_label="units", hline=(e.threshold, "copy below"), missing_x=fs.frames_without_face,
        )
    else:
        expression = Panel(f"expression: {report.expression_skipped}"[:110], [], y_range=(0.0, 1.0))
    m = report.motion
    pair_x = [i + 0.5 for i in m.pair_frames]
    dyn = {True: "dynamic", False: "static", None: "n/a"}[m.dynamic]
    motion = Panel(
        f"motion (Farneback): mean {_fmt(m.video_mean_magnitude)} px/frame, dynamic degree: {dyn}",
        [Series("mean |flow|", pair_x, m.mean_magnitude, (40, 150, 60)),
         Series("top-5% |flow|", pair_x, m.top5_magnitude, (150, 60, 160))],
        y_label="px", hline=(m.dynamic_threshold, "dynamic thr."),
    )
    return [identity, expression, motion]


def plot_report(report):
    title = f"{report.source}  ({report.num_frames} frames, {report.width}x{report.height}, {report.fps:g} fps)"
    return draw_panels(report_panels(report), x_max=max(report.num_frames - 1, 1), title=title[:120])


def image_to_array(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _finite_min(values, default: float) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else default


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _fmt_pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0%}"
