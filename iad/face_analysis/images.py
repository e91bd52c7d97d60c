"""Input images -> what the models take: (H, W, 3) uint8 RGB (or BGR for insightface), from
ComfyUI IMAGE batches, arrays or lists; empty, NaN and tiny images are refused by name."""

from __future__ import annotations

import numpy as np
import torch

from .report import FaceImageError, which_image

MIN_IMAGE_PX = 16


def as_rgb_uint8(image, index: int = 0, count: int = 1) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a numpy array / torch tensor: uint8 0..255 or float 0..1;
    (H, W) or (H, W, 1) grayscale, RGB, or RGBA (alpha dropped). Rejects empty, NaN and tiny images."""
    where = which_image(index, count)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype in (torch.bfloat16, torch.float16):
            image = image.float()
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise FaceImageError(f"{where} looks channels-first {array.shape}; pass (height, width, channels).")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise FaceImageError(f"{where} has shape {tuple(array.shape)}; expected (height, width, 1/3/4 channels).")
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise FaceImageError(f"{where} is empty ({w}x{h} px).")
    if min(h, w) < MIN_IMAGE_PX:
        raise FaceImageError(f"{where} is only {w}x{h} px, too small to hold a recognisable face; "
                             "use a photo where the face is at least ~64 px wide.")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
            raise FaceImageError(f"{where} has dtype {array.dtype}; expected uint8 or float.")
        as_float = array.astype(np.float32, copy=False)
        if not np.isfinite(as_float).all():
            bad = int((~np.isfinite(as_float)).sum())
            raise FaceImageError(f"{where} contains {bad} NaN/infinite values: the node that produced it failed "
                                 "upstream. Check the image source (decode, resize, VAE).")
        scale = 1.0 if np.issubdtype(array.dtype, np.integer) else 255.0
        array = np.clip(as_float * scale + (0.5 if scale == 255.0 else 0.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def images_to_rgb_uint8(images) -> list[np.ndarray]:
    """A batch (ComfyUI IMAGE tensor [B, H, W, C] float 0..1, a uint8 array, or a list of images)
    as a list of (H, W, 3) uint8 RGB arrays. A float batch is checked and converted in one pass;
    errors name the image."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point() and images.shape[0] > 0:
        count = images.shape[0]
        flat = images.detach().reshape(count, -1)
        if flat.shape[1] == 0:
            raise FaceImageError(f"{which_image(0, count)} is empty ({images.shape[2]}x{images.shape[1]} px).")
        finite = torch.isfinite(flat).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            return [as_rgb_uint8(images[bad], bad, count)]  # raises with the image named
        if images.shape[-1] in (1, 3, 4) and min(images.shape[1:3]) >= MIN_IMAGE_PX:
            converted = (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
            return [as_rgb_uint8(converted[i], i, count) for i in range(count)]
    items = image_list(images)
    return [as_rgb_uint8(img, i, len(items)) for i, img in enumerate(items)]


def images_to_bgr_uint8(images) -> list[np.ndarray]:
    """Like ``images_to_rgb_uint8`` but BGR (what insightface's models take). A float RGB batch is
    converted frame by frame through one reused scratch buffer: several times faster than whole-
    batch tensor ops, which allocate (and page-fault) hundreds of MB for a video."""
    if (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point() and images.shape[0] > 0
            and images.shape[-1] == 3 and min(images.shape[1:3]) >= MIN_IMAGE_PX):
        import cv2

        count = images.shape[0]
        array = images.detach().cpu().float().numpy()
        scratch = np.empty(array.shape[1:], dtype=np.float32)
        flat = scratch.reshape(-1)
        converted = []
        for i, frame in enumerate(array):
            np.multiply(frame, 255.0, out=scratch)
            scratch += 0.5
            # NaN/inf propagate into the dot product (one BLAS pass, ~4x cheaper than .sum()); a
            # huge finite value that overflows it is re-checked exactly below and passes.
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(np.dot(flat, flat))
            if not finite:
                as_rgb_uint8(frame, i, count)   # raises, naming the image, if really non-finite
            np.clip(scratch, 0, 255, out=scratch)
            converted.append(cv2.cvtColor(scratch.astype(np.uint8), cv2.COLOR_RGB2BGR))
        return converted
    return [np.ascontiguousarray(rgb[..., ::-1]) for rgb in images_to_rgb_uint8(images)]


def image_list(images) -> list:
    if isinstance(images, torch.Tensor) or isinstance(images, np.ndarray):
        if images.ndim == 4:
            return [images[i] for i in range(images.shape[0])]
        if images.ndim in (2, 3):
            return [images]
        raise FaceImageError(f"images has shape {tuple(images.shape)}; expected (batch, height, width, channels).")
    return list(images)
