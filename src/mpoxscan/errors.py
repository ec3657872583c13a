"""The exceptions that mpoxscan raises on purpose: each carries a one-line reason meant for a person."""

from __future__ import annotations


class MpoxscanError(Exception):
    """Base class: the command line prints its message as one line and exits non-zero."""


class ImageError(MpoxscanError):
    """An input could not be opened as a usable photo (empty, truncated, not an image, too large, ...)."""


class UnsupportedImageError(ImageError):
    """Content that is no image, or an image in a format mpoxscan does not open (a service answers 415 for it, where
    other image errors are a 400): raised by the one image loader, so that no caller reads its message to tell."""


class ImageShapeError(ImageError):
    """An image refused for its declared shape (too thin a short side, too extreme an aspect ratio), read from the
    header before decoding. ``size`` is the stored (width, height), so that callers can still report it."""

    def __init__(self, message: str, size: tuple[int, int]) -> None:
        super().__init__(message)
        self.size = size


class WeightsError(MpoxscanError):
    """Pretrained weights are missing, corrupted or do not fit their architecture."""


class UnknownModelError(MpoxscanError, KeyError):
    """A model name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
