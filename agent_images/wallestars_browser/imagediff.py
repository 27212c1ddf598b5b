"""Visual comparison of screenshots (pure functions over PNG bytes)."""

from __future__ import annotations

import functools
import io

import imagehash
from PIL import Image, ImageChops


def _rgba(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGBA")


def perceptual_hash(png: bytes) -> str:
    """dHash (a perceptual hash of gradients): near-identical images have hashes a small
    Hamming distance apart. pHash would pull in scipy for its DCT: ~0.3 s per attempt."""
    return str(imagehash.dhash(_rgba(png).convert("RGB")))


def size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as im:
        return im.size


def diff(a: bytes, b: bytes, tolerance: int = 0) -> tuple[float, bytes | None]:
    """The fraction of pixels where some channel differs by more than ``tolerance``, and
    an image of them (red on the dimmed original; None when none differ).

    Images of different sizes differ everywhere (ratio 1.0).
    """
    ia, ib = _rgba(a), _rgba(b)
    if ia.size != ib.size:
        return 1.0, None
    per_channel = ImageChops.difference(ia, ib).split()
    worst = functools.reduce(ImageChops.lighter, per_channel)  # max over channels
    mask = worst.point(lambda v: 255 if v > tolerance else 0, mode="L")
    changed = mask.histogram()[255]
    ratio = changed / (ia.size[0] * ia.size[1])
    if changed == 0:
        return 0.0, None
    base = Image.blend(ia.convert("RGB"), Image.new("RGB", ia.size, "white"), 0.7)
    base.paste(Image.new("RGB", ia.size, (255, 0, 0)), mask=mask)
    out = io.BytesIO()
    base.save(out, format="PNG")
    return ratio, out.getvalue()
