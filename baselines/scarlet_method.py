"""The scarlet2 peer baseline: a two-source forward model of each blend, fitted in batches.

Per blend:

1. detection: the sep baseline's cold/hot extraction
   (:func:`challenge.pipeline.photometry.detect`) and its central/companion rule
   (:func:`baselines.sep_baseline.assign_sources`); the central and the companion become the
   sources of the scene. When only one source is found, only it is
   fitted (the other slot is switched off) and it keeps the slot the rule gives it; more than
   two detections still give a two-source scene, whose models absorb the extra pieces.
2. model: a scarlet2 :class:`~scarlet2.Scene` in one band holding two
   :class:`~scarlet2.Source` s, each a :class:`~scarlet2.SersicMorphology` (free centre (y, x),
   half-light radius, ellipticity, Sérsic index in [0.5, 6]) normalised to unit sum times a
   free flux (counts). The model frame has a narrow Gaussian PSF (σ = 0.7 px); the
   :class:`~scarlet2.Observation` carries the release PSF (``context.psf``), so scarlet2's
   renderer convolves with the difference kernel. The loss is scarlet2's negative
   log-likelihood with uniform inverse-variance weights 1 / (2 σ_sky²).
3. fit: Adam (optax) with a cosine-decayed step size, a fixed number of steps, no early stop.
4. outputs: each source's model flux; masks are each source's rendered model divided by the
   total rendered model (a fraction in [0, 1], thresholded at 0.5 by the scorer), set to 0
   where the total model is fainter than ``mask_threshold_sigma`` × σ_sky (the truth masks'
   1.5σ isophote), so a mask is the source's share of the blend's footprint.

Why not ``Scene.fit`` on free-form (pixel) morphologies, scarlet's usual choice: in a single
band two free-form morphologies are degenerate where they overlap (scarlet separates sources
by colour), and a measured run shared flux badly (-50…-60 % for a faint neighbour in a small
box) at 1–4 s per blend, as ``Scene.fit`` steps from Python and recompiles for every new box
size. Parametric Sérsic sources break the degeneracy, and because every scene has the same
structure — both sources live in one fixed box covering the fitted frame, their positions are
parameters — one compiled fit serves all blends: the loop runs inside ``jax.lax.scan`` and is
vectorised over ``vmap_chunk`` blends with ``jax.vmap``. The fitted frame is a 64 × 64 px crop
around the pair when both sources (with a margin) fit inside it (≈ 90 % of v1 blends), else the
whole 128 × 128 stamp: two compiled shapes in all.

A fit that ends with a non-finite loss, flux or parameter is a convergence failure: that blend
gets the sep fluxes and masks of its detections and is flagged (``failed``); a run never stops
for it. ``converged`` records whether the loss changed by less than ``convergence_rtol`` over the
last tenth of the steps. :func:`run_scarlet_baseline` checkpoints every batch of blends in
``OUT/checkpoints/`` so a killed run resumes (``--resume``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from baselines.peers import import_peer
from baselines.sep_baseline import NO_DETECTION, assign_sources, detection_case_counts
from challenge.contract.errors import BlendbenchError
from challenge.pipeline.photometry import COLD, HOT, detect


class CheckpointError(BlendbenchError, ValueError):
    """A checkpoint folder belongs to a different run (release, settings or batch size)."""


@dataclass(frozen=True)
class ScarletSettings:
    """Settings of the scarlet2 fit.

    Attributes:
        n_iter: Adam steps per blend (fixed: every blend of a chunk runs the same steps).
        learning_rate: initial Adam step (unconstrained units: px for centres, natural log for
            flux and radius); final_lr_fraction: the cosine decay's end, as a fraction of it.
        model_psf_sigma: σ (px) of the model frame's Gaussian PSF.
        sersic_n_range: (min, max) Sérsic index; sersic_n_init: its starting value.
        max_ellipticity: bound on |e| (scarlet2's ellipticity, e = (1 - q²) / (1 + q²)).
        small_crop: side (px) of the crop fitted when the pair fits in it; crop_margin_px,
            crop_margin_a: the margin kept around each source, max(margin_px, margin_a × a)
            with a the sep semi-major axis (px).
        vmap_chunk: blends fitted together by one vectorised call in the small crop;
            large_chunk: the same for whole-stamp fits (fewer: a padded chunk costs its size).
        mask_threshold_sigma: masks are 0 where the total model < this × σ_sky.
        convergence_rtol: relative loss change over the last tenth of the steps below which a
            fit counts as converged.
    """

    n_iter: int = 300
    learning_rate: float = 0.1
    final_lr_fraction: float = 0.05
    model_psf_sigma: float = 0.7
    sersic_n_range: tuple[float, float] = (0.5, 6.0)
    sersic_n_init: float = 2.0
    max_ellipticity: float = 0.9
    small_crop: int = 64
    crop_margin_px: float = 10.0
    crop_margin_a: float = 4.0
    vmap_chunk: int = 32
    large_chunk: int = 8
    mask_threshold_sigma: float = 1.5
    convergence_rtol: float = 1e-3

    def to_dict(self) -> dict:
        """Plain types, for submission.toml and the checkpoint manifest."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Detection and initial values (numpy)


@dataclass
class SceneInit:
    """Starting values of a chunk of two-source scenes, in stamp pixels.

    Attributes:
        active: (n, 2) bool, the slot holds a detected source ([central, companion]).
        yx: (n, 2, 2) source centres (y, x) in px; flux: (n, 2) counts (> 0);
        radius: (n, 2) half-light radius (px); a: (n, 2) sep semi-major axis (px).
        detection: (n,) int8 case; sep_flux: (n, 2) counts and sep_masks: (n, 2, H, W) uint8,
            the sep photometry of the same detections (the fallback).
    """

    active: np.ndarray
    yx: np.ndarray
    flux: np.ndarray
    radius: np.ndarray
    a: np.ndarray
    detection: np.ndarray
    sep_flux: np.ndarray
    sep_masks: np.ndarray


def detect_chunk(images: np.ndarray, r_e_central: np.ndarray, psf_sigma_px: float) -> SceneInit:
    """sep cold/hot detection and the sep assignment for (n, H, W) blends; initial values."""
    n, h, w = images.shape
    init = SceneInit(
        active=np.zeros((n, 2), bool),
        yx=np.tile(np.array([h // 2, w // 2], float), (n, 2, 1)),
        flux=np.ones((n, 2)),
        radius=np.full((n, 2), 2.0),
        a=np.ones((n, 2)),
        detection=np.full(n, NO_DETECTION, np.int8),
        sep_flux=np.zeros((n, 2)),
        sep_masks=np.zeros((n, 2, h, w), np.uint8),
    )
    for k, image in enumerate(images):
        sources = detect(image, COLD)
        if len(sources) < 2:
            sources = detect(image, HOT)
        picks = assign_sources(
            sources.x, sources.y, sources.flux_auto, w // 2, h // 2, float(r_e_central[k])
        )
        init.detection[k] = picks[2]
        for slot, i in enumerate(picks[:2]):
            if i < 0:
                continue
            init.active[k, slot] = True
            init.yx[k, slot] = sources.y[i], sources.x[i]
            init.sep_flux[k, slot] = sources.flux_auto[i]
            init.sep_masks[k, slot] = sources.mask(i)
            init.flux[k, slot] = max(float(sources.flux_auto[i]), 0.1)
            ab = float(sources.a[i] * sources.b[i])
            init.radius[k, slot] = np.clip(1.18 * np.sqrt(max(ab - psf_sigma_px**2, 0.5)), 1, 20)
            init.a[k, slot] = float(sources.a[i])
    return init


def choose_crops(init: SceneInit, size: int, settings: ScarletSettings) -> np.ndarray:
    """Crop of each blend: (n, 3) int [side, y0, x0]; the small crop when the active sources and
    their margins fit in it, else the whole (size × size) stamp."""
    n = len(init.active)
    crops = np.tile(np.array([size, 0, 0]), (n, 1))
    s = settings.small_crop
    if s >= size:
        return crops
    for k in range(n):
        on = init.active[k]
        if not on.any():
            continue
        pos = init.yx[k, on]
        margin = np.maximum(settings.crop_margin_px, settings.crop_margin_a * init.a[k, on])
        lo = (pos - margin[:, None]).min(axis=0)
        hi = (pos + margin[:, None]).max(axis=0)
        if np.all(hi - lo <= s):
            origin = np.clip(np.round((lo + hi) / 2 - s / 2), 0, size - s).astype(int)
            crops[k] = s, origin[0], origin[1]
    return crops


# ---------------------------------------------------------------------------------------------
# The compiled fit (jax + scarlet2)


def _unconstrained(init: SceneInit, rows: np.ndarray, origin: np.ndarray, st: ScarletSettings):
    """Unconstrained starting parameters of the scenes ``rows``, centres relative to ``origin``
    ((m, 2) crop origins (y, x)). Returns a dict of float32 arrays with leading axis m."""
    lo, hi = st.sersic_n_range
    frac = (st.sersic_n_init - lo) / (hi - lo)
    m = len(rows)
    return {
        "yx": (init.yx[rows] - origin[:, None, :]).astype(np.float32),
        "log_flux": np.log(init.flux[rows]).astype(np.float32),
        "log_radius": np.log(init.radius[rows]).astype(np.float32),
        "u": np.zeros((m, 2, 2), np.float32),
        "t": np.full((m, 2), np.log(frac / (1 - frac)), np.float32),
    }


def _scene_template(s2, jnp, side: int, psf: np.ndarray, sky_sigma: float, st: ScarletSettings):
    """scarlet2 frame, matched observation and a two-source scene for a (side × side) crop.

    Both sources have one (side + 1)² box centred on the crop centre, so it covers the whole
    crop wherever a source sits; their morphologies and spectra are placeholders that the fit
    replaces.
    """
    frame = s2.Frame(s2.Box((1, side, side)), psf=s2.GaussianPSF(st.model_psf_sigma))
    obs = s2.Observation(
        np.zeros((1, side, side)),
        np.full((1, side, side), 1.0 / (2.0 * sky_sigma**2)),
        psf=s2.ArrayPSF(jnp.asarray(psf[None], dtype=jnp.float32)),
    )
    obs.match(frame)
    box = side + 1
    with s2.Scene(frame) as scene:
        for _ in range(2):
            s2.Source(
                jnp.array([side // 2, side // 2], dtype=float), jnp.ones(1), jnp.zeros((box, box))
            )
    return frame, obs, scene


@functools.lru_cache(maxsize=8)
def _compiled_fit(
    side: int, psf_key: bytes, psf_shape: tuple, sky_sigma: float, settings: ScarletSettings
):
    """Build the scarlet2 scene template for a (side × side) frame and return the jitted,
    vmapped fit ``fit(params, active, data) -> (params, losses, flux, renders)``.

    ``psf_key`` is the release PSF's float32 bytes (hashable, for the cache), ``psf_shape``
    its (height, width).
    """
    jax = import_peer("jax", "scarlet2")
    jnp = jax.numpy
    eqx = import_peer("equinox", "scarlet2")
    optax = import_peer("optax", "scarlet2")
    s2 = import_peer("scarlet2", "scarlet2")
    from scarlet2 import validation_utils

    psf = np.frombuffer(psf_key, np.float32).reshape(psf_shape)
    switch = validation_utils.VALIDATION_SWITCH
    s2.set_validation(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scarlet2 probing array attrs
            _, obs, scene = _scene_template(s2, jnp, side, psf, sky_sigma, settings)
    finally:
        s2.set_validation(switch)
    box = side + 1

    lo, hi = settings.sersic_n_range
    centre = jnp.array([side // 2, side // 2], dtype=jnp.float32)

    def profiles(p):
        """Unit-sum Sérsic morphologies (2, box, box) of the two sources."""
        out = []
        for k in range(2):
            u = p["u"][k]
            e = settings.max_ellipticity * u / jnp.sqrt(1.0 + jnp.sum(u**2))
            n = lo + (hi - lo) * jax.nn.sigmoid(p["t"][k])
            morph = s2.SersicMorphology(n, jnp.exp(p["log_radius"][k]), e, shape=(box, box))(
                delta_center=p["yx"][k] - centre
            )
            out.append(morph / jnp.sum(morph))
        return out

    def build(p, active):
        morphs = profiles(p)
        flux = jnp.exp(p["log_flux"]) * active
        leaves = []
        for k in range(2):
            leaves += [flux[k][None], morphs[k]]

        def where(sc):
            return [x for k in range(2) for x in (sc.sources[k].spectrum, sc.sources[k].morphology)]

        return eqx.tree_at(where, scene, leaves), flux

    def loss_fn(p, active, data):
        sc, _ = build(p, active)
        return -eqx.tree_at(lambda o: o.data, obs, data).log_likelihood(sc())

    schedule = optax.cosine_decay_schedule(
        settings.learning_rate, settings.n_iter, alpha=settings.final_lr_fraction
    )
    optim = optax.adam(schedule)

    def fit_one(p, active, data):
        state = optim.init(p)

        def step(carry, _):
            p, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, active, data)
            updates, state = optim.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), loss

        (p, _), losses = jax.lax.scan(step, (p, state), None, length=settings.n_iter)
        sc, flux = build(p, active)
        renders = jnp.stack([obs.render(sc.evaluate_source(src))[0] for src in sc.sources])
        return p, losses, flux, renders

    return jax.jit(jax.vmap(fit_one))


def _to_numpy(value):
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def fit_scenes(
    images: np.ndarray,
    init: SceneInit,
    crops: np.ndarray,
    psf: np.ndarray,
    sky_sigma: float,
    settings: ScarletSettings,
) -> dict[str, np.ndarray]:
    """Fit the two-source scenes of (n, H, W) blends, grouped by crop side, in vmapped chunks.

    Returns flux (n, 2) counts, fraction (n, 2, H, W) float32 masks, failed (n,) bool,
    converged (n,) bool, final_loss (n,) (negative log-likelihood); blends without detections
    get zeros and count as converged.
    """
    n, h, w = images.shape
    out = {
        "flux": np.zeros((n, 2)),
        "fraction": np.zeros((n, 2, h, w), np.float32),
        "failed": np.zeros(n, bool),
        "converged": np.ones(n, bool),
        "final_loss": np.zeros(n),
    }
    psf = np.ascontiguousarray(psf, np.float32)
    psf_key = psf.tobytes()
    todo = np.flatnonzero(init.active.any(axis=1))
    tail = max(1, settings.n_iter // 10)
    for side in np.unique(crops[todo, 0]):
        rows = todo[crops[todo, 0] == side]
        fit = _compiled_fit(int(side), psf_key, psf.shape, float(sky_sigma), settings)
        chunk = settings.vmap_chunk if side == settings.small_crop else settings.large_chunk
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part))])
            origin = crops[padded, 1:]
            data = np.stack(
                [
                    images[r, y0 : y0 + side, x0 : x0 + side]
                    for r, (y0, x0) in zip(padded, origin, strict=True)
                ]
            )[:, None].astype(np.float32)
            params = _unconstrained(init, padded, origin, settings)
            active = init.active[padded].astype(np.float32)
            p, losses, flux, renders = (_to_numpy(v) for v in fit(params, active, data))
            for j, r in enumerate(part):
                finite = (
                    np.isfinite(losses[j]).all()
                    and np.isfinite(flux[j]).all()
                    and all(np.isfinite(v[j]).all() for v in p.values())
                    and np.isfinite(renders[j]).all()
                )
                if not finite:
                    out["failed"][r] = True
                    out["converged"][r] = False
                    out["final_loss"][r] = np.nan
                    continue
                last, before = float(losses[j, -1]), float(losses[j, -tail])
                out["converged"][r] = abs(before - last) <= settings.convergence_rtol * abs(last)
                out["final_loss"][r] = last
                out["flux"][r] = flux[j]
                total = renders[j].sum(axis=0)
                footprint = total > settings.mask_threshold_sigma * sky_sigma
                frac = np.where(footprint, renders[j] / np.where(footprint, total, 1.0), 0.0)
                y0, x0 = crops[r, 1:]
                out["fraction"][r, :, y0 : y0 + side, x0 : x0 + side] = np.clip(frac, 0, 1)
    return out


# ---------------------------------------------------------------------------------------------
# The protocol method


def scarlet_chunk(
    images: np.ndarray,
    r_e_central: np.ndarray,
    psf: np.ndarray,
    sky_sigma: float,
    psf_fwhm_px: float,
    settings: ScarletSettings,
) -> dict[str, np.ndarray]:
    """Detect, fit and assign a chunk of (n, H, W) blends (counts); r_e_central (n,) px.

    Returns flux (n, 2) counts, masks (n, 2, H, W) float32 in [0, 1], detection (n,) int8,
    failed (n,) bool (fit not finite: sep fallback), converged (n,) bool, crop (n,) int16
    (side of the fitted frame, px; 0 without detections).
    """
    images = np.asarray(images, dtype=np.float32)
    psf_sigma = psf_fwhm_px / 2.3548
    init = detect_chunk(images, r_e_central, psf_sigma)
    crops = choose_crops(init, images.shape[-1], settings)
    fitted = fit_scenes(images, init, crops, psf, sky_sigma, settings)
    flux, masks = fitted["flux"], fitted["fraction"]
    failed = fitted["failed"]
    flux[failed] = init.sep_flux[failed]
    masks[failed] = init.sep_masks[failed]
    none = ~init.active.any(axis=1)
    return {
        "flux": flux,
        "masks": masks,
        "detection": init.detection,
        "failed": failed,
        "converged": fitted["converged"],
        "crop": np.where(none, 0, crops[:, 0]).astype(np.int16),
    }


class ScarletMethod:
    """scarlet2 two-source Sérsic scenes fitted in vmapped batches, as a protocol method.

    Usable with ``blendbench run baselines.scarlet_method:scarlet_method``.
    """

    def __init__(self, settings: ScarletSettings | None = None) -> None:
        self.settings = settings or ScarletSettings()

    def __call__(self, batch, context) -> dict[str, np.ndarray]:
        for module in ("jax", "equinox", "optax", "scarlet2"):
            import_peer(module, "scarlet2")
        if context.psf is None:
            raise BlendbenchError(
                f"{context.release_dir}: the scarlet2 baseline needs the release PSF "
                "(galaxies.h5 'psf'); regenerate the release with `blendbench generate`"
            )
        return scarlet_chunk(
            batch.images,
            batch.r_e_central,
            context.psf,
            context.sky_sigma,
            context.psf_fwhm / context.pixel_scale,
            self.settings,
        )


scarlet_method = ScarletMethod()


# ---------------------------------------------------------------------------------------------
# Checkpointed run over a release


CHECKPOINTS = "checkpoints"
_KEYS = ("blend_id", "flux", "masks", "detection", "failed", "converged", "crop")


def _batch_path(folder: Path, start: int) -> Path:
    return folder / f"batch_{start:06d}.npz"


def _save_batch(path: Path, blend_id: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Write one batch's outputs atomically (masks thresholded to uint8)."""
    arrays = {k: out[k] for k in _KEYS if k in out}
    arrays["blend_id"] = blend_id
    arrays["masks"] = (np.asarray(out["masks"]) >= 0.5).astype(np.uint8)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _fit_batch_to_checkpoint(batch, context, settings: ScarletSettings, path: Path) -> float:
    """Worker: fit one batch and write its checkpoint; returns the seconds it took."""
    t0 = time.perf_counter()
    from challenge.loaders.protocol import check_output

    out = ScarletMethod(settings)(batch, context)
    where = f"blends {int(batch.blend_id[0])}..{int(batch.blend_id[-1])}"
    check_output(out, len(batch.blend_id), batch.images.shape[-1], where)
    _save_batch(path, batch.blend_id, out)
    return time.perf_counter() - t0


def _prepare_checkpoints(folder: Path, manifest: dict, resume: bool) -> None:
    path = folder / "manifest.json"
    if resume and path.is_file():
        found = json.loads(path.read_text())
        if found != manifest:
            diff = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise CheckpointError(
                f"{path}: the checkpoints were made with different {', '.join(diff)}; rerun "
                "without --resume to start afresh (this deletes them) or restore the settings"
            )
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))


def run_scarlet_baseline(
    folder: str | Path,
    out: str | Path,
    workers: int = 1,
    resume: bool = False,
    batch_size: int = 250,
    settings: ScarletSettings | None = None,
    progress: Callable[[int], None] | None = None,
    limit: int | None = None,
    max_batches: int | None = None,
    keep_checkpoints: bool = False,
) -> tuple[dict[str, np.ndarray] | None, float]:
    """Run the scarlet2 method on a release's test blends, checkpointing every batch.

    Args:
        folder: release folder; out: submission folder (checkpoints in ``out/checkpoints``).
        workers: where the batches run (``challenge.pipeline.workers.Parallel``: 1 here, N or
            "local:N" Dask worker processes, each compiling its own fit, "tcp://HOST:PORT" a
            cluster sharing this file system, for the checkpoints). On a 2-core machine 1 is
            fastest: XLA already uses both cores.
        resume: reuse the checkpoints of an earlier run with the same release, settings,
            batch size and limit; without it they are deleted first.
        limit: fit only the first ``limit`` test blends (timing runs; the submission is then
            incomplete and will not pass validation).
        max_batches: stop after computing this many new batches, without writing the
            submission (a time-boxed run; continue it with ``resume=True``).
        keep_checkpoints: keep ``out/checkpoints`` after the submission is written.

    Returns (outputs: flux, masks (uint8), detection, failed, converged, crop, blend_id; or
    None when stopped by ``max_batches``; wall time of this call in s).
    """
    from challenge.contract.submission_folder import SubmissionMetadata, write_submission
    from challenge.loaders.protocol import iter_batches, release_context

    for module in ("jax", "equinox", "optax", "scarlet2"):
        import_peer(module, "scarlet2")
    import scarlet2

    settings = settings or ScarletSettings()
    context = release_context(folder)
    out = Path(out)
    ckpt = out / CHECKPOINTS
    manifest = {
        "release": context.release,
        "batch_size": batch_size,
        "limit": limit,
        "settings": settings.to_dict(),
    }
    _prepare_checkpoints(ckpt, manifest, resume)
    t0 = time.perf_counter()
    batches: list[Path] = []
    computed = resumed = 0
    fit_seconds = 0.0
    stopped = False
    from challenge.pipeline.workers import dask_client

    futures: list = []
    with dask_client(workers) as pool:
        for number, batch in enumerate(iter_batches(folder, batch_size)):
            first = number * batch_size
            if limit is not None and first >= limit:
                break
            if limit is not None and first + len(batch.blend_id) > limit:
                keep = limit - first
                batch = type(batch)(
                    batch.blend_id[:keep], batch.images[:keep], batch.r_e_central[:keep]
                )
            path = _batch_path(ckpt, first)
            batches.append(path)
            if path.is_file():
                resumed += 1
                if progress:
                    progress(len(batch.blend_id))
                continue
            if max_batches is not None and computed >= max_batches:
                stopped = True
                break
            computed += 1
            if pool is not None:
                job = pool.submit(
                    _fit_batch_to_checkpoint, pool.scatter(batch, hash=False), context, settings,
                    path, pure=False,
                )
                futures.append((len(batch.blend_id), job))
                continue
            fit_seconds += _fit_batch_to_checkpoint(batch, context, settings, path)
            if progress:
                progress(len(batch.blend_id))
        for size, job in futures:
            fit_seconds += job.result()
            if progress:
                progress(size)
    if stopped:
        return None, time.perf_counter() - t0
    parts = []
    for p in batches:
        with np.load(p) as z:
            parts.append({k: z[k] for k in z.files})
    result = {k: np.concatenate([q[k] for q in parts]) for k in _KEYS}
    seconds = time.perf_counter() - t0
    fitted = result["crop"] > 0
    meta = SubmissionMetadata(
        name=out.name,
        release=context.release,
        method=f"scarlet2 {scarlet2.__version__}: two Sérsic sources (unit-sum SersicMorphology "
        "x flux) at the sep cold/hot detections, release PSF, single band, fitted with Adam in "
        "jax.vmap batches (fixed boxes); model fluxes; masks = source model / total model "
        f"above {settings.mask_threshold_sigma:g} sigma; sep fallback for non-finite fits",
        link="https://github.com/pmelchior/scarlet2",
        inference_time_s=round(seconds, 2),
        extra={
            **settings.to_dict(),
            "workers": workers,
            "batch_size": batch_size,
            "limit": limit if limit is not None else "all",
            "resumed_batches": resumed,
            "fit_seconds_this_call": round(fit_seconds, 2),
            "failed_fits": int(result["failed"].sum()),
            "not_converged_fits": int((~result["converged"] & fitted).sum()),
            "small_crop_fraction": float(np.mean(result["crop"][fitted] == settings.small_crop))
            if fitted.any()
            else 0.0,
            "detection_cases": detection_case_counts(result["detection"]),
        },
    )
    write_submission(
        out,
        meta,
        result["blend_id"],
        result["flux"],
        masks=result["masks"],
        detection=result["detection"],
    )
    if not keep_checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
    return result, seconds
