"""Real image bytes for tests: tiny JPEG/PNG files made with Pillow."""

import io
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(fmt="JPEG", size=8, seed=0) -> bytes:
    """Return the bytes of a random `size`x`size` RGB image encoded as `fmt`.

    Args:
        fmt: str, a Pillow format name ("JPEG", "PNG", "BMP", ...). Defaults to "JPEG".
        size: int, width and height in pixels. Defaults to 8.
        seed: int, seed of the random pixels (another seed, other bytes). Defaults to 0.

    Example:
        Path("a.jpg").write_bytes(image_bytes("JPEG"))
    """
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path, fmt=None, size=8, seed=0) -> bytes:
    """Write a tiny image to `path` (format from the extension unless `fmt`), creating folders; return its bytes.

    Args:
        path: str or Path, the file to write.
        fmt: str or None, a Pillow format name. Defaults to None: PNG for `.png`, else JPEG.
        size: int, width and height in pixels. Defaults to 8.
        seed: int, seed of the random pixels. Defaults to 0.
    """
    path = Path(path)
    fmt = fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG")
    data = image_bytes(fmt, size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes with Pillow into an array (raises if they are not a valid image)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img)
