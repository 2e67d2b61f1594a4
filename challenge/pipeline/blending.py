"""Blends: a central stamp plus a shifted companion stamp, each with fresh sky noise.

blend = (central model + noise_1) + shift(companion model + noise_2, dx, dy), with both noise
fields drawn from the blend's own ``noise_seed``, so any blend can be materialised alone and the
result does not depend on chunking. Shifts pad with zeros (no wrap-around): the part of the
companion stamp shifted out of the frame is lost, and the uncovered strip holds only the
central's noise. Truth masks are each galaxy's isolated segmentation map, shifted with it.
"""

from __future__ import annotations

import numpy as np


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift the last two axes by (dy rows, dx columns), filling with zeros; same shape."""
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[..., dst_y, dst_x] = image[..., src_y, src_x]
    return out


def sky_noise(
    noise_seed: int, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """The blend's two sky-noise fields, (2, H, W) float32 counts, from its own seed.

    ``sigma`` (counts/px) is one value for both fields or one per field [central, companion].
    """
    rng = np.random.default_rng(noise_seed)
    scale = np.asarray(sigma, dtype=np.float32).reshape(-1, 1, 1)
    return rng.standard_normal((2, *shape), dtype=np.float32) * scale


def top_up_sigma(sigma: float, noise_var: np.ndarray) -> np.ndarray:
    """Sky noise (counts/px) to add to stamps that already hold noise of variance ``noise_var``
    so that every galaxy ends with the release's ``sigma`` (0 where a stamp is noisier)."""
    return np.sqrt(np.maximum(sigma**2 - np.asarray(noise_var, dtype=float), 0.0))


def blend_image(
    central: np.ndarray,
    companion: np.ndarray,
    dx: int,
    dy: int,
    sigma: float | tuple[float, float],
    noise_seed: int,
) -> np.ndarray:
    """One blend, (H, W) float32 counts, from two (H, W) stamps.

    ``sigma``: sky noise added to each stamp (one value, or [central, companion] for real
    stamps that already carry some noise).
    """
    noise = sky_noise(noise_seed, central.shape, sigma)
    return (central + noise[0]) + shift_image(companion + noise[1], dx, dy)


def blend_masks(
    central_mask: np.ndarray, companion_mask: np.ndarray, dx: int, dy: int
) -> np.ndarray:
    """Truth masks of one blend, (2, H, W) uint8: [central, shifted companion]."""
    return np.stack([central_mask, shift_image(companion_mask, dx, dy)]).astype(np.uint8)


def materialise(
    stamps: np.ndarray,
    masks: np.ndarray,
    rows_central: np.ndarray,
    rows_companion: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    noise_seeds: np.ndarray,
    sigma: float,
    noise_var: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of blends: images (n, H, W) float32 and masks (n, 2, H, W) uint8.

    ``rows_*`` index the parent ``stamps`` (n_galaxies, H, W) and ``masks``. ``noise_var``
    (n_galaxies,) is the noise variance already in each parent stamp (real galaxies); each
    galaxy then gets only the noise that tops it up to ``sigma``. None means noiseless models.
    """
    top_up = None if noise_var is None else top_up_sigma(sigma, noise_var)
    n = len(rows_central)
    h, w = stamps.shape[1:]
    images = np.empty((n, h, w), np.float32)
    out_masks = np.empty((n, 2, h, w), np.uint8)
    for i in range(n):
        c, k = rows_central[i], rows_companion[i]
        images[i] = blend_image(
            stamps[c],
            stamps[k],
            int(dx[i]),
            int(dy[i]),
            sigma if top_up is None else (top_up[c], top_up[k]),
            int(noise_seeds[i]),
        )
        out_masks[i] = blend_masks(masks[c], masks[k], int(dx[i]), int(dy[i]))
    return images, out_masks
