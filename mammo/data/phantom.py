"""Synthetic mammogram pixels: breast, tissue, masses, calcification clusters, crops.

Pure numpy/scipy logic with no files, so `synthetic` (which decides what to draw and writes the
DICOM tree) stays about layout. Images are float32 in [0, 1] until `to_uint16`; the chest wall is
on the left (column 0) and the caller mirrors RIGHT breasts. Everything is vectorised over pixels;
the only Python loops run over lesion parts (spicules, specks), never over pixels.

The two classes are made to overlap in simple intensity statistics on purpose (faint masses,
calcifications over dense tissue, stray specks and vessels in both), so that a patch's mean, std and
max do not give the label away and a model has to look at shape and texture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

Box = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open

DENSITY_THRESHOLD = {1: 1.3, 2: 0.7, 3: 0.1, 4: -0.5}  # BI-RADS density → fibroglandular z threshold
CROP_MIN, CROP_MAX = 100, 250  # cropped-image side range (px), like real crops relative to their mammogram
DENSE_PATCH_RATE = 1.0  # calcification clusters over a soft bright patch: their patches are as bright as masses'


def render_breast(
    rng: np.random.Generator, *, height: int, width: int, view: str, density: int
) -> tuple[np.ndarray, np.ndarray]:
    """A breast silhouette with fat, fibroglandular texture, vessels and film artefacts.

    Smooth fields are computed at quarter resolution and fine texture at half resolution, then
    upsampled once: this is what keeps a default tree within seconds. Returns the image and the
    normalised breast radius (< 1 inside) on a 2-px grid, used to place lesions.
    """
    quarter, half = (height // 4 + 1, width // 4 + 1), (height // 2 + 1, width // 2 + 1)
    silhouette = _silhouette(rng, height, width)
    radius_low = _breast_radius(quarter, step=4.0, view=view, params=silhouette)
    thickness = 1.0 - np.exp(-np.clip(1.0 - radius_low, 0.0, None) / 0.06)  # darker at the skin line
    gland = _fibroglandular(rng, quarter, density=density) * np.clip(1.25 - radius_low, 0.0, 1.0)
    tissue = thickness * (rng.uniform(0.30, 0.42) + rng.uniform(0.22, 0.36) * gland)
    if view == "MLO":
        tissue += _pectoral(rng, quarter, step=4.0, height=height, width=width)
    tissue = np.where(radius_low < 1.0, tissue, rng.uniform(0.01, 0.05))
    radius = _upsample(radius_low, *half)
    fine = ndimage.gaussian_filter(rng.standard_normal(half, dtype=np.float32), 0.7) * 0.05
    fine += rng.uniform(0.04, 0.12) * _curves(rng, half, count=int(rng.integers(1, 5)), length=(0.15, 0.5))
    image = _upsample(_upsample(tissue, *half) + fine * (0.2 + 0.8 * (radius < 1.0)), height, width)
    for row, col in _sample_cells(rng, (radius < 0.95) & (radius > 0.05), step=2, count=int(rng.poisson(1.5))):
        _stamp(image, row, col, _speck(rng.uniform(0.7, 1.8), 1.0, 0.0, ring=False) * rng.uniform(0.12, 0.5))
    return image, radius


def _upsample(field: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float32 field (PIL is several times faster than ndimage.zoom here)."""
    return np.array(Image.fromarray(field.astype(np.float32)).resize((width, height), Image.BILINEAR))


def _silhouette(rng: np.random.Generator, height: int, width: int) -> tuple[float, ...]:
    """Centre row, vertical and horizontal semi-axes (px) and boundary wobble of the half-ellipse."""
    return (
        height * rng.uniform(0.46, 0.54),
        height * rng.uniform(0.50, 0.60),
        width * rng.uniform(0.78, 0.94),
        rng.uniform(0.0, 0.04),
        rng.uniform(0, 2 * np.pi),
    )


def _breast_radius(shape: tuple[int, int], *, step: float, view: str, params: tuple[float, ...]) -> np.ndarray:
    """Normalised elliptical radius (< 1 inside the breast) on a grid of `step`-px cells, chest wall at column 0."""
    centre, semi_y, semi_x, wobble, phase = params
    rows = (np.arange(shape[0], dtype=np.float32)[:, None] * step - centre) / semi_y
    cols = np.arange(shape[1], dtype=np.float32)[None, :] * step / semi_x
    if view == "MLO":  # the axillary tail: the upper breast reaches further up the chest wall
        rows = np.where(rows < 0, rows * 0.85, rows)
    angle = np.arctan2(rows, cols)
    return (np.sqrt(rows**2 + cols**2) * (1.0 + wobble * np.cos(3 * angle + phase))).astype(np.float32)


def _fibroglandular(rng: np.random.Generator, shape: tuple[int, int], *, density: int) -> np.ndarray:
    """Soft-thresholded multi-scale smooth noise (quarter resolution): more tissue at higher density."""
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 5.0)
    medium = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.6)
    field = coarse / (coarse.std() + 1e-6) + 0.6 * medium / (medium.std() + 1e-6)
    threshold = DENSITY_THRESHOLD.get(density, 0.5) + rng.uniform(-0.3, 0.3)
    return (1.0 / (1.0 + np.exp(-(field - threshold) / 0.6))).astype(np.float32)


def _pectoral(rng: np.random.Generator, shape: tuple[int, int], *, step: float, height: int, width: int) -> np.ndarray:
    """The pectoral muscle of an MLO view: a bright soft-edged triangle in the upper chest-wall corner."""
    reach_x, reach_y = width * rng.uniform(0.22, 0.38), height * rng.uniform(0.30, 0.55)
    rows = np.arange(shape[0], dtype=np.float32)[:, None] * step / reach_y
    cols = np.arange(shape[1], dtype=np.float32)[None, :] * step / reach_x
    edge = np.clip((1.0 - rows - cols) * 12.0, 0.0, 1.0)
    return (rng.uniform(0.18, 0.30) * edge).astype(np.float32)


def _curves(rng: np.random.Generator, shape: tuple[int, int], *, count: int, length: tuple[float, float]) -> np.ndarray:
    """Thin bright quadratic curves (vessels, ducts, film scratches), peak about 1."""
    impulses = np.zeros(shape, dtype=np.float32)
    span = max(shape)
    for _ in range(count):
        start = rng.uniform((0, 0), shape)
        direction = rng.standard_normal(2)
        end = start + direction / np.linalg.norm(direction) * span * rng.uniform(*length)
        bend = (start + end) / 2 + rng.normal(0, span * 0.06, 2)
        t = np.linspace(0, 1, int(span * 1.5))[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        rows, cols = np.round(points).astype(int).T
        keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        impulses[rows[keep], cols[keep]] = 1.0
    return ndimage.gaussian_filter(impulses, 0.6) * 2.0


def _sample_cells(rng: np.random.Generator, allowed: np.ndarray, *, step: int, count: int) -> list[tuple[int, int]]:
    """`count` random full-resolution pixels inside allowed cells of a `step`-px grid."""
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0 or count <= 0:
        return []
    cells = rng.choice(candidates, size=count)
    jitter = rng.integers(0, step, size=(count, 2))
    return [
        (int(c // allowed.shape[1]) * step + int(dy), int(c % allowed.shape[1]) * step + int(dx))
        for c, (dy, dx) in zip(cells, jitter, strict=True)
    ]


def place_lesion(
    rng: np.random.Generator, radius: np.ndarray, *, shape: tuple[int, int], extent: int
) -> tuple[int, int]:
    """A lesion centre well inside the breast and at least `extent` px from the edges of an image of `shape`."""
    step = 2
    rows = np.arange(radius.shape[0])[:, None] * step
    cols = np.arange(radius.shape[1])[None, :] * step
    allowed = (radius > 0.12) & (radius < 0.72)
    allowed &= (rows > extent) & (rows < shape[0] - extent - step) & (cols > extent) & (cols < shape[1] - extent - step)
    cells = _sample_cells(rng, allowed, step=step, count=1)
    if not cells:  # a lesion too big for this breast: fall back to the middle of the breast
        return shape[0] // 2, int(np.clip(shape[1] // 3, extent + 1, shape[1] - extent - 1))
    return cells[0]


def _window(shape: tuple[int, int], row: int, col: int, half: int) -> tuple[Box, np.ndarray, np.ndarray]:
    """A box around (row, col) clipped to the image, with row/col offsets from the centre."""
    box = (max(row - half, 0), min(row + half + 1, shape[0]), max(col - half, 0), min(col + half + 1, shape[1]))
    offsets_y = np.arange(box[0], box[1], dtype=np.float32)[:, None] - row
    offsets_x = np.arange(box[2], box[3], dtype=np.float32)[None, :] - col
    return box, offsets_y, offsets_x


def draw_mass(
    rng: np.random.Generator, image: np.ndarray, *, centre: tuple[int, int], radius: float, shape: str,
    margins: str, contrast: float,
) -> np.ndarray:  # fmt: skip
    """Add a mass (denser blob shaped by the CSV shape and margins) and return its ROI mask."""
    box, dy, dx = _window(image.shape, *centre, half=int(radius * 1.7) + 4)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(1.3, 1.8) if shape.startswith(("OVAL", "LYMPH")) else rng.uniform(1.0, 1.25)
    along = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    distance = np.hypot(along, across) / radius
    if shape.startswith(("LOBULATED", "IRREGULAR", "ARCHITECTURAL")) or margins.startswith("MICROLOBULATED"):
        distance /= _boundary(rng, np.arctan2(across, along), shape=shape, margins=margins)
    softness = {"CIRCUMSCRIBED": 0.04, "MICROLOBULATED": 0.05, "OBSCURED": 0.12, "ILL_DEFINED": 0.2}.get(
        margins.split("-")[0], 0.08
    )
    if shape.startswith(("FOCAL", "ASYMMETRIC")):
        softness = 0.3
    body = 1.0 / (1.0 + np.exp(-(1.0 - distance) / softness))
    body *= 0.75 + 0.25 * np.clip(1.0 - distance, 0.0, 1.0)
    if shape.startswith("LYMPH"):  # fatty hilum: a darker centre
        body -= 0.45 * np.exp(-(distance**2) / 0.08)
    small = (body.shape[0] // 5 + 1, body.shape[1] // 5 + 1)
    body *= 1.0 + 0.2 * _upsample(rng.standard_normal(small, dtype=np.float32), *body.shape)
    image[box[0] : box[1], box[2] : box[3]] += contrast * body
    if "SPICULATED" in margins or "ARCHITECTURAL" in shape:
        outer, _, _ = _window(image.shape, *centre, half=int(radius * 2.5) + 4)
        lines = _spicules(
            rng, (outer[1] - outer[0], outer[3] - outer[2]), (centre[0] - outer[0], centre[1] - outer[2]), radius=radius
        )
        image[outer[0] : outer[1], outer[2] : outer[3]] += 0.6 * contrast * lines
    roi = np.zeros(image.shape, dtype=bool)
    roi[box[0] : box[1], box[2] : box[3]] = distance < 1.0
    return roi


def _boundary(rng: np.random.Generator, theta: np.ndarray, *, shape: str, margins: str) -> np.ndarray:
    """Radius multiplier per direction: harmonics for lobulated/irregular/microlobulated outlines.

    Evaluated on a table of 720 directions and looked up, which is much cheaper than cosines per pixel.
    """
    harmonics: list[tuple[int, float]] = []
    if shape.startswith("LOBULATED"):
        harmonics = [(int(rng.integers(3, 6)), rng.uniform(0.12, 0.22))]
    elif shape.startswith(("IRREGULAR", "ARCHITECTURAL")):
        harmonics = [(k, rng.uniform(0.04, 0.12)) for k in range(2, 7)]
    if margins.startswith("MICROLOBULATED"):
        harmonics.append((int(rng.integers(10, 15)), 0.05))
    table_angles = np.linspace(-np.pi, np.pi, 721)
    table = np.ones_like(table_angles)
    for order, amplitude in harmonics:
        table += amplitude * np.cos(order * table_angles + rng.uniform(0, 2 * np.pi))
    index = np.round((theta + np.pi) * (720 / (2 * np.pi))).astype(np.intp)
    return table.astype(np.float32)[index]


def _spicules(
    rng: np.random.Generator, shape: tuple[int, int], origin: tuple[int, int], *, radius: float
) -> np.ndarray:
    """Thin radial lines from the mass edge outwards, fading towards their tips (peak about 1)."""
    impulses = np.zeros(shape, dtype=np.float32)
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(6, 16))):
        t = np.linspace(0.0, 1.0, int(radius * 2))
        reach = 0.6 * radius + t * radius * rng.uniform(0.9, 1.8)
        rows = np.round(origin[0] + reach * np.sin(angle)).astype(int)
        cols = np.round(origin[1] + reach * np.cos(angle)).astype(int)
        keep = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        np.maximum.at(impulses, (rows[keep], cols[keep]), (1.0 - t[keep]).astype(np.float32))
    return ndimage.gaussian_filter(impulses, 0.8) * 3.0


def draw_calcifications(
    rng: np.random.Generator, image: np.ndarray, *, centre: tuple[int, int], extent: float, calc_type: str,
    distribution: str, contrast: float,
) -> np.ndarray:  # fmt: skip
    """Add a cluster of small bright specks (type and spread from the CSV) and return its ROI mask."""
    points = _calc_positions(rng, extent=extent, distribution=distribution, calc_type=calc_type)
    points += np.asarray(centre, dtype=np.float32)
    points = points[(points >= 3).all(axis=1) & (points < np.asarray(image.shape) - 3).all(axis=1)]
    if len(points) == 0:  # a cluster pushed off the image edge: keep one speck at the centre
        points = np.asarray([centre], dtype=np.float32)
    if rng.random() < DENSE_PATCH_RATE:  # calcifications within dense tissue: a soft bright patch underneath
        box, dy, dx = _window(image.shape, *centre, half=int(extent * 2.2))
        sigma = extent * rng.uniform(0.5, 1.0)
        image[box[0] : box[1], box[2] : box[3]] += rng.uniform(0.05, 0.28) * np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
    kind = calc_type.split("-")[0]
    axis = rng.uniform(0, np.pi)
    for row, col in points:
        stamp = _calc_speck(rng, kind, axis)
        _stamp(image, round(row), round(col), stamp * contrast * rng.uniform(0.6, 1.0))
    return _ellipse_roi(image.shape, points, pad=rng.uniform(4, 9))


def _calc_positions(rng: np.random.Generator, *, extent: float, distribution: str, calc_type: str) -> np.ndarray:
    """Speck offsets (row, col) spread as the CSV's distribution says."""
    spread = distribution.split("-")[0]
    count = int(rng.integers(4, 10)) if calc_type.startswith(("COARSE", "EGGSHELL")) else int(rng.integers(20, 50))
    if calc_type.startswith("VASCULAR") or spread == "LINEAR":
        t = rng.uniform(-extent, extent, count)
        angle = rng.uniform(0, np.pi)
        jitter = rng.normal(0, extent * 0.08, count)
        return np.stack([t * np.sin(angle) + jitter * np.cos(angle), t * np.cos(angle) - jitter * np.sin(angle)], 1)
    if spread == "SEGMENTAL":
        radius, angle = extent * np.sqrt(rng.uniform(0, 1, count)) * 2 - extent, rng.uniform(-0.4, 0.4, count)
        heading = rng.uniform(0, 2 * np.pi)
        return np.stack([radius * np.sin(heading + angle), radius * np.cos(heading + angle)], 1)
    if spread in ("REGIONAL", "DIFFUSELY_SCATTERED"):
        radius, angle = extent * np.sqrt(rng.uniform(0, 1, count)), rng.uniform(0, 2 * np.pi, count)
        return np.stack([radius * np.sin(angle), radius * np.cos(angle)], 1)
    return np.clip(rng.normal(0, extent * 0.45, (count, 2)), -extent, extent)


def _calc_speck(rng: np.random.Generator, kind: str, axis: float) -> np.ndarray:
    """One calcification's stamp, peak about 1, sized and shaped by the calc type."""
    if kind == "FINE_LINEAR_BRANCHING":
        return _speck(0.8, rng.uniform(2.5, 5.0), axis + rng.normal(0, 0.4), ring=False)
    if kind == "PLEOMORPHIC":
        return _speck(rng.uniform(0.8, 1.7), rng.uniform(1.0, 2.5), rng.uniform(0, np.pi), ring=False)
    if kind in ("LUCENT_CENTER", "EGGSHELL", "ROUND_AND_REGULAR"):
        return _speck(rng.uniform(1.2, 2.2), 1.0, 0.0, ring=kind != "ROUND_AND_REGULAR")
    if kind == "COARSE":
        return _speck(rng.uniform(1.6, 2.6), rng.uniform(1.0, 1.6), rng.uniform(0, np.pi), ring=False)
    if kind == "VASCULAR":
        return _speck(0.8, rng.uniform(3.0, 6.0), axis, ring=False)
    if kind == "AMORPHOUS":
        return 0.65 * _speck(rng.uniform(0.8, 1.2), 1.0, 0.0, ring=False)
    return _speck(rng.uniform(0.8, 1.3), 1.0, 0.0, ring=False)  # PUNCTATE and NA


def _speck(sigma: float, elongation: float, angle: float, *, ring: bool) -> np.ndarray:
    """An (optionally elongated or ring-shaped) Gaussian stamp with peak about 1."""
    half = int(np.ceil(3 * sigma * elongation)) + 1
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    dy, dx = offsets[:, None], offsets[None, :]
    along = (dx * np.cos(angle) + dy * np.sin(angle)) / elongation
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    squared = along**2 + across**2
    stamp = np.exp(-squared / (2 * sigma**2))
    if ring:
        stamp = np.clip(stamp - 0.75 * np.exp(-squared / (2 * (0.5 * sigma) ** 2)), 0.0, None) * 1.6
    return stamp.astype(np.float32)


def _stamp(image: np.ndarray, row: int, col: int, stamp: np.ndarray) -> None:
    """Add `stamp` centred on (row, col), clipped at the image edge."""
    half = stamp.shape[0] // 2
    top, left = row - half, col - half
    rows = slice(max(top, 0), min(top + stamp.shape[0], image.shape[0]))
    cols = slice(max(left, 0), min(left + stamp.shape[1], image.shape[1]))
    image[rows, cols] += stamp[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]


def _ellipse_roi(shape: tuple[int, int], points: np.ndarray, *, pad: float) -> np.ndarray:
    """The outline a reader would draw around a cluster: an ellipse through the outermost speck, plus a margin."""
    centre = points.mean(axis=0)
    covariance = (np.cov(points.T) if len(points) > 2 else np.zeros((2, 2))) + np.eye(2) * 4.0
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    spread = np.sqrt(np.einsum("ni,ij,nj->n", points - centre, np.linalg.inv(covariance), points - centre).max())
    semi_axes = spread * np.sqrt(eigenvalues) + pad
    box, dy, dx = _window(shape, round(centre[0]), round(centre[1]), int(semi_axes.max()) + 2)
    offsets = np.stack(np.broadcast_arrays(dy, dx), -1) + (np.round(centre) - centre).astype(np.float32)
    along_axes = offsets @ eigenvectors.astype(np.float32)  # (rows, cols, 2) in the ellipse's frame
    roi = np.zeros(shape, dtype=bool)
    roi[box[0] : box[1], box[2] : box[3]] = ((along_axes / semi_axes.astype(np.float32)) ** 2).sum(-1) < 1.0
    return roi


def add_mass_decoys(rng: np.random.Generator, image: np.ndarray, roi: np.ndarray) -> None:
    """A few stray specks in and around a mass, so that a bright maximum is no calcification giveaway."""
    top, bottom, left, right = bounding_box(roi)
    for _ in range(int(rng.integers(1, 4))):
        row = int(np.clip(rng.integers(top - 5, bottom + 5), 0, image.shape[0] - 1))
        col = int(np.clip(rng.integers(left - 5, right + 5), 0, image.shape[1] - 1))
        _stamp(image, row, col, _speck(rng.uniform(0.8, 1.8), 1.0, 0.0, ring=False) * rng.uniform(0.2, 0.5))


def add_artefact(rng: np.random.Generator, image: np.ndarray, roi: np.ndarray) -> None:
    """A bright dust speck or a vessel crossing near a lesion of either class (film and anatomy both do this)."""
    top, bottom, left, right = bounding_box(roi)
    if rng.random() < 0.5:
        speck = _speck(rng.uniform(1.0, 2.5), rng.uniform(1.0, 2.0), rng.uniform(0, np.pi), ring=False)
        _stamp(image, int(rng.integers(top, bottom)), int(rng.integers(left, right)), speck * rng.uniform(0.3, 0.7))
        return
    rows = slice(max(top - 40, 0), min(bottom + 40, image.shape[0]))
    cols = slice(max(left - 40, 0), min(right + 40, image.shape[1]))
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    image[rows, cols] += rng.uniform(0.06, 0.16) * _curves(rng, shape, count=1, length=(0.8, 1.2))


def crop_box(rng: np.random.Generator, roi: np.ndarray) -> Box:
    """The cropped-image box: the ROI's bounding box with a margin, sized like CBIS-DDSM crops."""
    low_row, high_row, low_col, high_col = bounding_box(roi)
    box: list[int] = []
    for low, high, size in ((low_row, high_row, roi.shape[0]), (low_col, high_col, roi.shape[1])):
        side = int(np.clip((high - low) * rng.uniform(1.2, 1.7), CROP_MIN, min(CROP_MAX, size - 1)))
        start = int(np.clip((low + high) // 2 - side // 2 + rng.integers(-4, 5), 0, size - side))
        box += [start, start + side]
    return box[0], box[1], box[2], box[3]


def bounding_box(mask: np.ndarray) -> Box:
    """(row0, row1, col0, col1), half-open, of the True pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def to_uint16(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Map to 16 bits with a per-image gain and offset (scanner/film variation); bright tissue saturates."""
    gain, offset = rng.uniform(0.85, 1.25), rng.uniform(0.0, 0.04)
    return (np.clip(offset + gain * image, 0.0, 1.0) * 65535.0).round().astype(np.uint16)
