"""A procedural world of small portrait videos whose identity and action factors are known exactly.

Every clip is ``FRAMES`` frames of ``SIZE`` x ``SIZE`` RGB. Who the person is (identity factors)
never changes inside a clip; what the person does (action factors) changes per frame; the scene
(background, lighting, shirt) is a nuisance that the caption names.

- :class:`Identity`: face shape, skin tone, hair colour and style, eye spacing and colour, nose,
  brows, accessories (glasses, hat). Dozens of thousands of combinations.
- Actions: one per clip (``ACTIONS``), held with a per-frame intensity that drifts smoothly; the
  per-frame ground-truth class is ``Clip.labels``. One action per clip, because Wan has no absolute
  position in time (3-D RoPE is relative), so "first this, then that" cannot be learnt by a model
  this small: the first world's base model put the two actions of "smiles, then turns left" into
  the wrong halves as often as into the right ones (20 % vs 19 % of frames).
- :func:`render` draws frames from per-frame parameters with anti-aliased signed-distance shapes
  (pure torch, batched: thousands of frames per second).
- :func:`caption` / :func:`sample_clip`: the prompt grammar ("a person smiles at the beach") and
  the clip it describes.

Everything is a function of an explicit ``numpy.random.Generator`` so datasets are reproducible.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
import torch

SIZE = 32            # frame width and height (px)
FRAMES = 9           # frames per clip
SUPERSAMPLE = 2      # render at 2x and average: anti-aliasing
# The camera frames the head closely: at 32 px every expression must span whole latent patches
# (4x4 px) for a tiny video model to be able to draw it.
ZOOM = 1.3

# -- actions -------------------------------------------------------------------------------------
# The prompt phrase of each action; class 0 is "neutral" (no phrase: never asked for).
ACTIONS = ("neutral", "smile", "frown", "surprise", "wink", "blink", "turn_left", "turn_right", "nod")
ACTION_PHRASES = {
    "smile": "smiles", "frown": "frowns", "surprise": "looks surprised", "wink": "winks", "blink": "blinks",
    "turn_left": "turns left", "turn_right": "turns right", "nod": "nods",
}
PROMPT_ACTIONS = tuple(ACTION_PHRASES)                # actions a prompt can ask for (not neutral)
EXPRESSIONS = ("smile", "frown", "surprise", "wink", "blink", "turn_left", "turn_right", "nod")
SCENES = ("beach", "forest", "city", "studio", "night")
SCENE_PHRASES = {"beach": "at the beach", "forest": "in a forest", "city": "in the city", "studio": "in a studio",
                 "night": "at night"}
# Appearance phrases: real captions often say what a person looks like ("a blond woman wearing
# glasses"), which is what teaches a text-to-video model to draw a *given* look -- the pathway an
# identity adapter then steers. Skin tone, face shape, eyes, nose and brows are never described.
HAIR_PHRASES = ("with black hair", "with brown hair", "with blond hair", "with red hair", "with grey hair",
                "with blue hair")
BALD_PHRASE = "with no hair"
ACCESSORY_PHRASES = {"glasses": "wearing glasses", "hat": ("wearing a red hat", "wearing a blue hat", "wearing a yellow hat")}
APPEARANCE_PHRASES = (*HAIR_PHRASES, BALD_PHRASE, ACCESSORY_PHRASES["glasses"], *ACCESSORY_PHRASES["hat"])

# -- identity factors ----------------------------------------------------------------------------
SKIN_TONES = ((236, 200, 170), (210, 160, 120), (170, 115, 80), (120, 80, 55), (245, 215, 190), (190, 140, 95))
HAIR_COLOURS = ((30, 25, 20), (110, 70, 35), (220, 190, 110), (170, 60, 30), (200, 200, 205), (60, 60, 160))
HAIR_STYLES = ("short", "long", "bald", "bangs")
EYE_COLOURS = ((60, 110, 200), (90, 60, 30), (60, 150, 80), (40, 40, 40))
FACE_SHAPES = ((0.44, 0.56), (0.50, 0.54), (0.40, 0.62))        # half-width, half-height (frame units)
EYE_SPACINGS = (0.15, 0.19, 0.23)
NOSE_SIZES = (0.05, 0.08, 0.11)
BROWS = (0.025, 0.05)                                              # thickness
ACCESSORIES = ("none", "glasses", "hat")
HAT_COLOURS = ((200, 40, 40), (40, 90, 200), (240, 220, 60))


@dataclass(frozen=True)
class Identity:
    """Discrete identity factors (indices into the tables above)."""

    face: int
    skin: int
    hair_colour: int
    hair_style: int
    eye_colour: int
    eye_spacing: int
    nose: int
    brows: int
    accessory: int
    accessory_colour: int = 0

    @staticmethod
    def sample(rng: np.random.Generator) -> "Identity":
        acc = int(rng.integers(len(ACCESSORIES)))
        return Identity(
            face=int(rng.integers(len(FACE_SHAPES))), skin=int(rng.integers(len(SKIN_TONES))),
            hair_colour=int(rng.integers(len(HAIR_COLOURS))), hair_style=int(rng.integers(len(HAIR_STYLES))),
            eye_colour=int(rng.integers(len(EYE_COLOURS))), eye_spacing=int(rng.integers(len(EYE_SPACINGS))),
            nose=int(rng.integers(len(NOSE_SIZES))), brows=int(rng.integers(len(BROWS))), accessory=acc,
            accessory_colour=int(rng.integers(len(HAT_COLOURS))) if ACCESSORIES[acc] == "hat" else 0,
        )

    def describe(self) -> str:
        return (f"{HAIR_STYLES[self.hair_style]} hair colour {self.hair_colour}, skin {self.skin}, face {self.face}, "
                f"eyes {self.eye_colour}/{self.eye_spacing}, nose {self.nose}, brows {self.brows}, "
                f"{ACCESSORIES[self.accessory]}")


def sample_identities(count: int, seed: int, exclude: set | None = None) -> list[Identity]:
    """``count`` distinct identities (none of them in ``exclude``), reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    out: list[Identity] = []
    while len(out) < count:
        ident = Identity.sample(rng)
        key = astuple(ident)
        if key in seen:
            continue
        seen.add(key)
        out.append(ident)
    return out


# -- per-frame parameters ------------------------------------------------------------------------
ACTION_PARAMS = ("smile", "frown", "surprise", "wink", "blink", "yaw", "pitch")


def action_vector(action: str, intensity: float) -> np.ndarray:
    """The 7 per-frame action parameters of ``action`` at ``intensity`` (0..1)."""
    v = np.zeros(len(ACTION_PARAMS), np.float32)
    if action in ("smile", "frown", "surprise", "wink", "blink"):
        v[ACTION_PARAMS.index(action)] = intensity
    elif action == "turn_left":
        v[5] = -intensity          # towards the image's left
    elif action == "turn_right":
        v[5] = intensity
    elif action == "nod":
        v[6] = intensity
    return v


@dataclass
class Clip:
    identity: Identity
    action: str
    scene: str
    caption: str
    params: np.ndarray        # [FRAMES, len(ACTION_PARAMS)]
    labels: np.ndarray        # [FRAMES] action class index per frame (0 = neutral)
    jitter: np.ndarray        # [FRAMES, 2] small head motion (x, y)
    lighting: float           # brightness multiplier
    shirt: int                # index into SHIRT_COLOURS


SHIRT_COLOURS = ((80, 80, 90), (200, 200, 200), (150, 40, 40), (40, 110, 60), (40, 60, 130))


def appearance(identity: Identity) -> str:
    """What a caption can say about how ``identity`` looks: hair (colour, or bald) and accessory."""
    parts = [BALD_PHRASE if HAIR_STYLES[identity.hair_style] == "bald" else HAIR_PHRASES[identity.hair_colour]]
    acc = ACCESSORIES[identity.accessory]
    if acc == "glasses":
        parts.append(ACCESSORY_PHRASES["glasses"])
    elif acc == "hat":
        parts.append(ACCESSORY_PHRASES["hat"][identity.accessory_colour])
    return " ".join(parts)


def caption(action: str | None, scene: str, looks: str = "") -> str:
    """The grammar: ``a person [<appearance>] <action> <scene>`` (the action left out when the clip's
    caption omits it, as most real video captions do for facial expressions), e.g. "a person with
    blond hair wearing glasses smiles at the beach"."""
    subject = f"a person {looks}" if looks else "a person"
    if not action or action == "neutral":
        return f"{subject} {SCENE_PHRASES[scene]}"
    return f"{subject} {ACTION_PHRASES[action]} {SCENE_PHRASES[scene]}"


def parse_caption(text: str) -> tuple[str | None, str | None]:
    """Inverse of :func:`caption` for prompts written in the grammar: (action, scene); parts it
    cannot find are None (so prompts outside the grammar still evaluate what they can)."""
    text = " ".join(text.lower().replace(",", " ").split())
    scene = next((s for s, p in SCENE_PHRASES.items() if p in text), None)
    found = [(text.find(p), a) for a, p in ACTION_PHRASES.items() if f" {p}" in f" {text}"]
    return (min(found)[1] if found else None), scene


def clip_schedule(action: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame parameters and labels: the action is held through the clip, its intensity drifting
    smoothly between 0.75 and 1.0 (a random walk, so every frame differs a little)."""
    walk = np.cumsum(rng.normal(0, 0.06, FRAMES)) + rng.uniform(-0.1, 0.1)
    intensity = 0.875 + 0.125 * np.tanh(walk)
    params = np.stack([action_vector(action, float(v)) for v in intensity]).astype(np.float32)
    return params, np.full(FRAMES, ACTIONS.index(action), np.int64)


def sample_clip(identity: Identity, rng: np.random.Generator, action: str | None = None,
                scene: str | None = None, omit_action_prob: float = 0.0, describe_prob: float = 0.0) -> Clip:
    if action is None:      # neutral clips too: most real footage has stretches of a plain face
        action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    if scene is None:
        scene = SCENES[int(rng.integers(len(SCENES)))]
    params, labels = clip_schedule(action, rng)
    jitter = np.cumsum(rng.normal(0, 0.008, (FRAMES, 2)), 0).astype(np.float32)
    omit = rng.random() < omit_action_prob
    looks = appearance(identity) if rng.random() < describe_prob else ""
    return Clip(identity, action, scene, caption(None if omit else action, scene, looks), params, labels, jitter,
                float(rng.uniform(0.85, 1.1)), int(rng.integers(len(SHIRT_COLOURS))))


def still(identity: Identity, action: str, scene: str = "studio", intensity: float = 1.0) -> Clip:
    """A one-pose 'photo' clip (every frame the same): reference photos for the experiment."""
    params = np.tile(action_vector(action, intensity), (FRAMES, 1))
    labels = np.full(FRAMES, ACTIONS.index(action), np.int64)
    return Clip(identity, action, scene, caption(action, scene), params, labels, np.zeros((FRAMES, 2), np.float32),
                1.0, 0)


# -- rendering -----------------------------------------------------------------------------------
# How far a head turn / nod moves the head and, further, the features on it (frame units at zoom 1).
HEAD_YAW, FEATURE_YAW = 0.12, 0.22
HEAD_PITCH, FEATURE_PITCH = 0.06, 0.16

def _colour(table, idx) -> torch.Tensor:
    return torch.tensor([table[i] for i in idx], dtype=torch.float32) / 255.0


def _identity_tensors(identities: list[Identity]) -> dict[str, torch.Tensor]:
    get = lambda name: [getattr(i, name) for i in identities]  # noqa: E731
    shapes = torch.tensor([FACE_SHAPES[i] for i in get("face")])
    return {
        "fw": shapes[:, 0], "fh": shapes[:, 1], "skin": _colour(SKIN_TONES, get("skin")),
        "hair": _colour(HAIR_COLOURS, get("hair_colour")), "style": torch.tensor(get("hair_style")),
        "eye": _colour(EYE_COLOURS, get("eye_colour")), "spacing": torch.tensor([EYE_SPACINGS[i] for i in get("eye_spacing")]),
        "nose": torch.tensor([NOSE_SIZES[i] for i in get("nose")]), "brow": torch.tensor([BROWS[i] for i in get("brows")]),
        "acc": torch.tensor(get("accessory")), "hat": _colour(HAT_COLOURS, get("accessory_colour")),
    }


def _soft(sdf: torch.Tensor, px: float) -> torch.Tensor:
    """Coverage of a shape from its signed distance (negative inside), ~1 px soft edge."""
    return torch.sigmoid(-sdf / px)


def _ellipse(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (frame units)."""
    dx, dy = x - cx, y - cy
    r = torch.sqrt((dx / rx) ** 2 + (dy / ry) ** 2 + 1e-12)
    grad = torch.sqrt((dx / rx**2) ** 2 + (dy / ry**2) ** 2 + 1e-12) / r   # |d r / d(x, y)|
    return (r - 1) / grad   # first-order distance: good near the edge, monotone far away


def _over(canvas, colour, alpha):
    return canvas * (1 - alpha[:, None]) + colour[:, :, None, None] * alpha[:, None]


def _scene_background(scene: list[str], y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    n = len(scene)
    out = torch.zeros(n, 3, *y.shape[-2:])
    for k, s in enumerate(scene):
        yy, xx = y[0], x[0]
        if s == "beach":
            sky = torch.tensor([0.45, 0.7, 0.95])[:, None, None]
            sand = torch.tensor([0.93, 0.85, 0.6])[:, None, None]
            out[k] = torch.where(yy[None] > 0.35, sand, sky)
        elif s == "forest":
            stripes = (torch.sin(xx * 18) > 0.3).float()[None]
            out[k] = torch.tensor([0.15, 0.45, 0.2])[:, None, None] * (1 - 0.35 * stripes)
        elif s == "city":
            blocks = ((torch.floor((xx + 1) * 4) % 2) * 0.15)[None]
            out[k] = torch.tensor([0.55, 0.55, 0.6])[:, None, None] + blocks
        elif s == "studio":
            out[k] = torch.tensor([0.82, 0.78, 0.72])[:, None, None] * (1 - 0.15 * (yy[None] + 1) / 2)
        else:  # night
            out[k] = torch.tensor([0.06, 0.08, 0.22])[:, None, None] + 0.05 * (1 - yy[None])
    return out


def render(identities: list[Identity], params: np.ndarray | torch.Tensor, scenes: list[str],
           jitter: np.ndarray | torch.Tensor | None = None, lighting: np.ndarray | torch.Tensor | None = None,
           shirts: list[int] | None = None, size: int = SIZE) -> torch.Tensor:
    """Render N frames: one identity, parameter row, scene (and optional jitter/lighting/shirt) per
    frame. Returns float RGB in [0, 1], ``[N, 3, size, size]``."""
    n = len(identities)
    p = torch.as_tensor(np.asarray(params), dtype=torch.float32).reshape(n, len(ACTION_PARAMS))
    smile, frown, surprise, wink, blink, yaw, pitch = p.unbind(1)
    j = torch.zeros(n, 2) if jitter is None else torch.as_tensor(np.asarray(jitter), dtype=torch.float32).reshape(n, 2)
    light = torch.ones(n) if lighting is None else torch.as_tensor(np.asarray(lighting), dtype=torch.float32).reshape(n)
    shirts = shirts or [0] * n
    ids = _identity_tensors(identities)
    hi = size * SUPERSAMPLE
    coords = ((torch.arange(hi, dtype=torch.float32) + 0.5) / hi * 2 - 1) / ZOOM
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    x, y = x[None].expand(n, -1, -1), y[None].expand(n, -1, -1)
    px = 2.0 / hi / ZOOM
    B = lambda t: t[:, None, None]  # noqa: E731

    canvas = _scene_background(scenes, y, x)
    cx = B(j[:, 0] + HEAD_YAW * yaw)
    cy = B(j[:, 1] + 0.02 + HEAD_PITCH * pitch)
    fw = B(ids["fw"] * (1 - 0.18 * yaw.abs()))
    fh = B(ids["fh"])
    style = ids["style"]
    # shoulders and neck
    shirt = _colour(SHIRT_COLOURS, shirts)
    canvas = _over(canvas, shirt, _soft(_ellipse(x, y, cx * 0.5, B(torch.full((n,), 1.15)), B(torch.full((n,), 0.8)),
                                                 B(torch.full((n,), 0.35))), px))
    canvas = _over(canvas, ids["skin"] * 0.85, _soft(torch.maximum((x - cx).abs() - 0.16, -(y - cy - 0.3)), px)
                   * (y < 0.95).float())
    # long hair behind the head
    long_hair = B((style == 1).float())
    back = _soft(torch.maximum(_ellipse(x, y, cx, cy + 0.12, fw + 0.1, fh + 0.12), -(y - cy + 0.2)), px)
    canvas = _over(canvas, ids["hair"], back * long_hair)
    # face
    face = _soft(_ellipse(x, y, cx, cy, fw, fh), px)
    canvas = _over(canvas, ids["skin"], face)
    # hair on top (not bald)
    top_line = cy - fh * torch.where(B(style == 3), torch.tensor(0.35), torch.tensor(0.6))
    cap = _soft(torch.maximum(_ellipse(x, y, cx, cy - 0.05, fw + 0.04, fh + 0.06), y - top_line), px)
    canvas = _over(canvas, ids["hair"], cap * B((style != 2).float()))
    # hat
    hat = _soft(torch.maximum(_ellipse(x, y, cx, cy - fh * 0.75, fw + 0.08, fh * 0.45), y - (cy - fh * 0.62)), px)
    canvas = _over(canvas, ids["hat"], hat * B((ids["acc"] == 2).float()))
    # features move with yaw (towards the turn) and pitch (down on a nod)
    fx = cx + B(FEATURE_YAW * yaw)
    fy = cy + B(FEATURE_PITCH * pitch)
    spacing = B(ids["spacing"])
    eye_y = fy - 0.08 - B(0.03 * surprise)
    for side, closed in ((-1, torch.maximum(wink, blink)), (1, blink)):
        ex = fx + side * spacing
        open_h = B(0.075 * (1 - 0.9 * closed) + 0.045 * surprise)
        sclera = _soft(_ellipse(x, y, ex, eye_y, B(torch.full((n,), 0.085)), open_h), px)
        canvas = _over(canvas, torch.ones(n, 3) * 0.97, sclera)
        iris = _soft(_ellipse(x, y, ex + B(0.04 * yaw), eye_y, B(torch.full((n,), 0.045)), torch.minimum(open_h, B(torch.full((n,), 0.05)))), px)
        canvas = _over(canvas, ids["eye"], iris)
        lid = _soft(_ellipse(x, y, ex, eye_y, B(torch.full((n,), 0.095)), B(torch.full((n,), 0.03))), px) * B(closed.clamp(0, 1))
        canvas = _over(canvas, torch.tensor([[0.22, 0.13, 0.1]]).expand(n, 3), lid)
        # brow: raised by surprise, lowered and tilted inwards by a frown
        brow_y = eye_y - 0.11 - B(0.09 * surprise) + B(0.05 * frown)\
            + B(0.08 * frown) * (x - ex) * side * -4.0
        brow = _soft(torch.maximum((x - ex).abs() - 0.09, (y - brow_y).abs() - B(ids["brow"])), px)
        canvas = _over(canvas, ids["hair"] * 0.6, brow)
        # glasses: a ring round each eye
        ring = _soft((_ellipse(x, y, ex, fy - 0.08, B(torch.full((n,), 0.12)), B(torch.full((n,), 0.1)))).abs() - 0.012, px)
        canvas = _over(canvas, torch.full((n, 3), 0.08), ring * B((ids["acc"] == 1).float()))
    # nose
    nose = _soft(_ellipse(x, y, fx + B(0.04 * yaw), fy + 0.07, B(ids["nose"] * 0.45), B(ids["nose"])), px)
    canvas = _over(canvas, ids["skin"] * 0.78, nose)
    # mouth: smile = arc curving up, frown = arc curving down, surprise = open ellipse
    mouth_y = fy + 0.27
    neutral_w = B(torch.full((n,), 0.12)) + B(0.07 * smile)
    curve = B(smile - frown)
    u = ((x - fx) / neutral_w).clamp(-1, 1)
    arc_y = mouth_y + curve * (0.07 - 0.14 * u**2)
    # a broad smile shows teeth: a white crescent under the upturned lip line
    teeth = _soft(torch.maximum(y - arc_y, mouth_y - 0.02 - y), px) * B((smile - 0.3).clamp(0, 0.4) / 0.4)
    canvas = _over(canvas, torch.full((n, 3), 0.97), teeth)
    line = _soft(torch.maximum((x - fx).abs() - neutral_w, (y - arc_y).abs() - 0.032), px)
    open_mouth = _soft(_ellipse(x, y, fx, mouth_y + 0.01, B(0.05 + 0.05 * surprise), B(0.02 + 0.11 * surprise)), px)
    mouth = torch.maximum(line * B(1 - surprise.clamp(0, 1)), open_mouth * B((surprise > 0.05).float()))
    canvas = _over(canvas, torch.tensor([[0.45, 0.1, 0.12]]).expand(n, 3), mouth)
    canvas = canvas * B(light)[:, None]
    canvas = torch.nn.functional.avg_pool2d(canvas, SUPERSAMPLE)
    return canvas.clamp(0, 1)


def render_clips(clips: list[Clip], size: int = SIZE) -> torch.Tensor:
    """``[N, FRAMES, 3, size, size]`` in [0, 1]."""
    ids = [c.identity for c in clips for _ in range(FRAMES)]
    params = np.concatenate([c.params for c in clips])
    scenes = [c.scene for c in clips for _ in range(FRAMES)]
    jitter = np.concatenate([c.jitter for c in clips])
    lighting = np.repeat([c.lighting for c in clips], FRAMES)
    shirts = [c.shirt for c in clips for _ in range(FRAMES)]
    frames = render(ids, params, scenes, jitter, lighting, shirts, size)
    return frames.reshape(len(clips), FRAMES, 3, size, size)


def keypoints(identities: list[Identity], params: np.ndarray, jitter: np.ndarray | None = None,
              size: int = SIZE) -> np.ndarray:
    """Ground-truth 5 keypoints (eye centres, nose tip, mouth corners; insightface order) in pixels,
    ``[N, 5, 2]``: what the world's detector learns to predict."""
    n = len(identities)
    p = np.asarray(params, np.float32).reshape(n, len(ACTION_PARAMS))
    j = np.zeros((n, 2), np.float32) if jitter is None else np.asarray(jitter, np.float32).reshape(n, 2)
    spacing = np.array([EYE_SPACINGS[i.eye_spacing] for i in identities])
    yaw, pitch = p[:, 5], p[:, 6]
    fx = j[:, 0] + (HEAD_YAW + FEATURE_YAW) * yaw
    fy = j[:, 1] + 0.02 + (HEAD_PITCH + FEATURE_PITCH) * pitch
    eye_y = fy - 0.08
    mouth_y = fy + 0.27
    pts = np.stack([
        np.stack([fx - spacing, eye_y], -1), np.stack([fx + spacing, eye_y], -1), np.stack([fx + 0.04 * yaw, fy + 0.1], -1),
        np.stack([fx - 0.11, mouth_y], -1), np.stack([fx + 0.11, mouth_y], -1),
    ], 1)
    return ((pts * ZOOM + 1) / 2 * size).astype(np.float32)


def face_boxes(identities: list[Identity], params: np.ndarray, jitter: np.ndarray | None = None,
               size: int = SIZE) -> np.ndarray:
    """Ground-truth face boxes ``[N, 4]`` (x1, y1, x2, y2) in pixels."""
    n = len(identities)
    p = np.asarray(params, np.float32).reshape(n, len(ACTION_PARAMS))
    j = np.zeros((n, 2), np.float32) if jitter is None else np.asarray(jitter, np.float32).reshape(n, 2)
    shapes = np.array([FACE_SHAPES[i.face] for i in identities])
    cx = j[:, 0] + HEAD_YAW * p[:, 5]
    cy = j[:, 1] + 0.02 + HEAD_PITCH * p[:, 6]
    fw = shapes[:, 0] * (1 - 0.18 * np.abs(p[:, 5]))
    fh = shapes[:, 1]
    box = np.stack([cx - fw, cy - fh, cx + fw, cy + fh], -1)
    return ((np.clip(box * ZOOM, -1, 1) + 1) / 2 * size).astype(np.float32)
