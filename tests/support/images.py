"""Small images in the formats clients send, made with Pillow: the bytes a request carries."""

from __future__ import annotations

import io

from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def encoded_image(color: tuple[int, int, int], image_format: str = "PNG", size: tuple[int, int] = (40, 30)) -> bytes:
    """A plain image of one colour, encoded as `image_format` (any Pillow writes: PNG, JPEG, WEBP…)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, image_format)
    return buffer.getvalue()
