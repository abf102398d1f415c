"""ORCA's image augmentation (torchvision's RandomCrop(32, padding=4) then RandomHorizontalFlip), on numpy
batches. One home for the CIFAR-10 proxy sample and CIFAR-100 training.

    crop = CropFlip(pad=4, fill=(0.0, 0.0, 0.0))
    x_aug = crop(x, np.random.default_rng(0))          # x: (N, C, H, W), any dtype
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropFlip:
    """Per image: pad by `pad` on every side with `fill` (per channel), take a random H×W crop (offsets
    uniform in 0..2·pad), mirror it left-right with probability ½.

    Args:
        pad: padding on each side (torchvision's RandomCrop padding).
        fill: the padding value per channel, in the units of the array (torchvision pads the uint8 image
            with 0, so a normalised array pads with (0 − mean) / std).
    """

    pad: int = 4
    fill: tuple[float, ...] = (0.0,)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        p = self.pad
        fill = np.broadcast_to(np.asarray(self.fill, dtype=x.dtype), (c,))
        padded = np.empty((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
        padded[...] = fill[None, :, None, None]
        padded[:, :, p : p + h, p : p + w] = x
        top = rng.integers(0, 2 * p + 1, n)
        left = rng.integers(0, 2 * p + 1, n)
        flip = rng.random(n) < 0.5
        out = np.empty_like(x)
        for i in range(n):
            crop = padded[i, :, top[i] : top[i] + h, left[i] : left[i] + w]
            out[i] = crop[:, :, ::-1] if flip[i] else crop
        return out
