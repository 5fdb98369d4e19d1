"""Renderer-independent scene description of a pin connector.

A :class:`Scene` is plain data: a list of primitives (oriented boxes and
capped cylinders) with poses and materials, a set of pinhole cameras and one
sun light.  Both renderers (:mod:`gaikan.synth.raycast`, the numpy default,
and :mod:`gaikan.synth.blender`) draw the same :class:`Scene`, which
round-trips through JSON (:meth:`Scene.to_dict` / :meth:`Scene.from_dict`).

World frame: z up, units of the pin pitch.  The housing's top face is the
plane z = 0; a 3-column × 9-row pin array (pitch 1.0) stands on it, column
``c`` at x = c − 1, row ``r`` at y = 4 − r (row 0 is at the top of the
image).  Square pins are 0.5 × 0.5 and protrude 2.0 (they reach 0.5 into the
housing so that a tilted or pushed pin never shows a gap at its foot);
cylindrical pins have radius 0.25.

Camera model (shared by every renderer): a pinhole at ``position`` with
orthonormal ``rotation`` whose columns are the camera's right, up and
backward axes in world coordinates (the Blender convention: the camera looks
along −z of its own frame); ``fov_y`` is the full vertical field of view in
degrees, pixels are square, and the ray of pixel (row i, column j) of an
H×W image passes through the image-plane point
``x = ((j + 0.5)/W·2 − 1)·tan(fov_y/2)·W/H``,
``y = (1 − (i + 0.5)/H·2)·tan(fov_y/2)``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "CAMERA_PRESETS",
    "DEFAULT_SEVERITY",
    "DEFECT_MODES",
    "LAYOUTS",
    "N_COLS",
    "N_ROWS",
    "SUN_DIRECTION",
    "VIEWS",
    "Camera",
    "Defect",
    "Jitter",
    "Material",
    "Primitive",
    "Scene",
    "Sun",
    "build_scene",
    "make_camera",
    "parse_defect",
    "pin_name",
    "pin_pattern",
    "sample_defect",
    "sample_rng",
]

N_ROWS, N_COLS = 9, 3
PITCH = 1.0
PIN_HALF = 0.25  # square pin half-width and cylinder radius
PIN_TOP = 2.0  # protrusion above the housing
PIN_FOOT = 0.5  # depth inside the housing
HOUSING_HALF = (2.0, 5.0, 0.5)  # housing box half extents; top face at z = 0

LAYOUTS = ("square", "cylinder", "mixed")
DEFECT_MODES = ("missing", "pushed", "shifted", "tilt_x", "tilt_y")
VIEWS = ("top", "oblique")

#: Default severity ranges (magnitudes) sampled uniformly per defect image:
#: pushed = depth pushed in, shifted = displacement in the xy-plane (pitch
#: units, random direction), tilt_* = angle in degrees (random sign) about the
#: pin's foot.  ``missing`` has no severity.
DEFAULT_SEVERITY: dict[str, tuple[float, float]] = {
    "pushed": (0.3, 0.8),
    "shifted": (0.15, 0.3),
    "tilt_x": (10.0, 20.0),
    "tilt_y": (10.0, 20.0),
}


#: Named views: (distance, polar angle from vertical in degrees, azimuth in
#: degrees (0 = camera on the +x side), target height, vertical field of view
#: in degrees).  Add an entry to define a new view.
CAMERA_PRESETS: dict[str, tuple[float, float, float, float, float]] = {
    "top": (20.0, 0.0, 0.0, 0.0, 31.0),
    "oblique": (20.0, 30.0, 0.0, 0.5, 31.0),
    "oblique_y": (20.0, 35.0, -90.0, 0.5, 33.0),
}

#: Direction towards the sun before jitter (normalised when used): high,
#: from the upper left of the top view, so pins cast short shadows.
SUN_DIRECTION = (-0.25, 0.15, 1.0)

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Material:
    """Grey material: Lambert ``albedo`` plus Blinn–Phong ``specular``/``shininess``."""

    albedo: float
    specular: float = 0.0
    shininess: float = 20.0
    metallic: bool = False


@dataclass(frozen=True)
class Primitive:
    """An oriented box or a capped cylinder.

    Attributes
    ----------
    name : str
        Unique name (``"table"``, ``"housing"``, ``"pin_r{row}_c{col}"``).
    kind : {"box", "cylinder"}
    center : tuple of 3 float
        World position of the local origin (the shape's centre).
    rotation : tuple of 9 float
        Row-major 3×3 local-to-world rotation.
    half : tuple of 3 float
        Box: half extents along local x, y, z.  Cylinder: (radius, radius,
        half height); its axis is local z.
    material : str
        Key into :attr:`Scene.materials`.
    """

    name: str
    kind: str
    center: tuple[float, float, float]
    rotation: tuple[float, ...]
    half: tuple[float, float, float]
    material: str

    @property
    def R(self) -> np.ndarray:
        """Local-to-world rotation, shape (3, 3)."""
        return np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera (see the module docstring for the exact pixel model)."""

    name: str
    position: tuple[float, float, float]
    rotation: tuple[float, ...]  # row-major 3×3, columns = right, up, backward
    fov_y: float  # degrees

    @property
    def R(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)


@dataclass(frozen=True)
class Sun:
    """Directional light: unit ``direction`` *towards* the sun, radiance scale, ambient term."""

    direction: tuple[float, float, float]
    intensity: float = 1.0
    ambient: float = 0.25


@dataclass(frozen=True)
class Defect:
    """A defect applied to one pin.

    ``modes`` holds one mode or several (a combination, all on the same
    pin); ``severity`` maps mode → signed value (pushed: depth > 0,
    tilt_*: degrees, shifted: magnitude) and ``direction`` is the shift
    direction in degrees (0 = +x).
    """

    modes: tuple[str, ...]
    row: int
    col: int
    severity: dict[str, float] = field(default_factory=dict)
    direction: float = 0.0

    @property
    def name(self) -> str:
        return "+".join(self.modes)


@dataclass
class Scene:
    """Everything a renderer needs for one part under one set of conditions.

    Attributes
    ----------
    primitives : list of Primitive
        Object id of ``primitives[k]`` is ``k + 1`` (0 = nothing hit).
    materials : dict of str → Material
    cameras : dict of str → Camera
    sun : Sun
    noise_sigma : float
        Sensor noise, grey levels (0–255 scale), added after tone mapping.
    meta : dict
        Free-form labels (layout, defect, …), JSON-serialisable.
    """

    primitives: list[Primitive]
    materials: dict[str, Material]
    cameras: dict[str, Camera]
    sun: Sun
    noise_sigma: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def index(self, name: str) -> int | None:
        """Object id (1-based) of the primitive called ``name``, or None."""
        for k, p in enumerate(self.primitives):
            if p.name == name:
                return k + 1
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the exchange format with other renderers)."""
        return {
            "primitives": [asdict(p) for p in self.primitives],
            "materials": {k: asdict(m) for k, m in self.materials.items()},
            "cameras": {k: asdict(c) for k, c in self.cameras.items()},
            "sun": asdict(self.sun),
            "noise_sigma": self.noise_sigma,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        def tup(x):
            return tuple(float(v) for v in x)

        prims = [
            Primitive(
                name=p["name"],
                kind=p["kind"],
                center=tup(p["center"]),
                rotation=tup(p["rotation"]),
                half=tup(p["half"]),
                material=p["material"],
            )
            for p in d["primitives"]
        ]
        cams = {
            k: Camera(
                name=c["name"],
                position=tup(c["position"]),
                rotation=tup(c["rotation"]),
                fov_y=float(c["fov_y"]),
            )
            for k, c in d["cameras"].items()
        }
        mats = {k: Material(**m) for k, m in d["materials"].items()}
        s = d["sun"]
        sun = Sun(
            direction=tup(s["direction"]),
            intensity=float(s["intensity"]),
            ambient=float(s["ambient"]),
        )
        return cls(
            prims, mats, cams, sun, float(d.get("noise_sigma", 0.0)), dict(d.get("meta", {}))
        )


@dataclass(frozen=True)
class Jitter:
    """Standard deviations of the nominal (good-part) variation.

    Small on purpose: the same pin must land on the same pixels in every
    good image (≈ 0.1 px at 128²), or pixel-based detectors cannot
    work; big enough that good images differ like real ones do.
    """

    pin_xy: float = 0.004  # pitch units (1 px ≈ 0.085 at 128²)
    pin_height: float = 0.008
    pin_tilt: float = 0.12  # degrees
    part_xy: float = 0.004
    part_rot: float = 0.04  # degrees about z
    camera_pos: float = 0.008
    camera_target: float = 0.004
    camera_roll: float = 0.025  # degrees
    sun_dir: float = 0.5  # degrees
    sun_intensity: float = 0.01  # relative
    tint: float = 0.01  # relative albedo change per material
    noise: float = 1.5  # grey levels

    def scaled(self, k: float) -> Jitter:
        """All deviations multiplied by ``k`` (``k = 0``: identical good parts)."""
        return Jitter(**{f: getattr(self, f) * k for f in self.__dataclass_fields__})


# --------------------------------------------------------------------------- helpers


def _rot(axis: str, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _t(a: np.ndarray) -> Any:  # a flat tuple of floats, of the length the field needs
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).ravel())


def pin_name(row: int, col: int) -> str:
    """Primitive name of the pin at (row, col)."""
    return f"pin_r{row}_c{col}"


def pin_pattern(layout: str, pattern: str | Sequence[str] | None = None) -> list[str]:
    """Pin shapes, row-major over the 9×3 grid: ``"s"`` square or ``"c"`` cylinder.

    Parameters
    ----------
    layout : {"square", "cylinder", "mixed"}
    pattern : str, optional
        Only for ``"mixed"``: ``"checker"`` (default; cylinders where
        row + col is odd), ``"column"`` (middle column cylinders), ``"rows"``
        (odd rows cylinders) or an explicit 27-character string of ``s``/``c``
        (row-major; separators ``,``/``/``/spaces are ignored).
    """
    if layout == "square":
        return ["s"] * (N_ROWS * N_COLS)
    if layout == "cylinder":
        return ["c"] * (N_ROWS * N_COLS)
    if layout != "mixed":
        raise ParameterError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    pattern = pattern or "checker"
    cells = [(r, c) for r in range(N_ROWS) for c in range(N_COLS)]
    if pattern == "checker":
        return ["c" if (r + c) % 2 else "s" for r, c in cells]
    if pattern == "column":
        return ["c" if c == 1 else "s" for r, c in cells]
    if pattern == "rows":
        return ["c" if r % 2 else "s" for r, c in cells]
    chars = [ch for ch in str(pattern).lower() if ch not in " ,/|"]
    if len(chars) != N_ROWS * N_COLS or set(chars) - {"s", "c"}:
        raise ParameterError(
            "mixed pattern must be 'checker', 'column', 'rows' or 27 characters of "
            f"'s'/'c' (row-major, 9 rows × 3 columns), got {pattern!r}"
        )
    return chars


def parse_defect(spec: str) -> tuple[str, ...]:
    """``"pushed+tilt_x"`` → ``("pushed", "tilt_x")``; validates the modes."""
    modes = tuple(m.strip() for m in str(spec).split("+") if m.strip())
    if not modes:
        raise ParameterError("empty defect specification")
    bad = [m for m in modes if m not in DEFECT_MODES]
    if bad:
        raise ParameterError(
            f"unknown defect mode(s) {bad}; choose from {DEFECT_MODES} (combine with '+')"
        )
    if len(set(modes)) != len(modes):
        raise ParameterError(f"defect mode repeated in {spec!r}")
    return modes


def sample_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent generator for one sample: a stable function of seed and keys.

    String keys are hashed with CRC-32 (stable across runs and machines), so
    every image has its own stream and results do not depend on the order
    or the process in which images are rendered.
    """
    ints = [int(seed)]
    for k in keys:
        ints.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k))
    return np.random.default_rng(ints)


def sample_defect(
    modes: Sequence[str],
    rng: np.random.Generator,
    severity: Mapping[str, Any] | None = None,
    pin: tuple[int, int] | None = None,
) -> Defect:
    """Draw the pin and the severities of one defect.

    Parameters
    ----------
    modes : sequence of str
        One mode or a combination (applied to the same pin).
    rng : numpy Generator
    severity : mapping, optional
        Per mode either a ``(low, high)`` magnitude range or a fixed signed
        value; missing modes use :data:`DEFAULT_SEVERITY`.
    pin : (row, col), optional
        Fix the pin instead of drawing it uniformly.
    """
    severity = dict(severity or {})
    if pin is None:
        k = int(rng.integers(N_ROWS * N_COLS))
        row, col = divmod(k, N_COLS)
    else:
        row, col = int(pin[0]), int(pin[1])
        if not (0 <= row < N_ROWS and 0 <= col < N_COLS):
            raise ParameterError(f"pin {pin} outside the {N_ROWS}×{N_COLS} grid")
    sev: dict[str, float] = {}
    direction = 0.0
    for m in modes:
        if m == "missing":
            continue
        spec = severity.get(m, DEFAULT_SEVERITY[m])
        sign_draw = rng.random() < 0.5  # always drawn: keeps streams aligned
        dir_draw = float(rng.uniform(0.0, 360.0))
        mag_draw = rng.random()
        if np.ndim(spec) == 0:
            val = float(spec)
        else:
            lo, hi = (float(v) for v in spec)
            val = lo + (hi - lo) * mag_draw
            if m.startswith("tilt") and sign_draw:
                val = -val
        if m == "shifted":
            direction = dir_draw
        sev[m] = round(val, 6)
    return Defect(tuple(modes), row, col, sev, round(direction, 6))


# --------------------------------------------------------------------------- building


def make_camera(
    view: str,
    rng: np.random.Generator | None = None,
    jitter: Jitter | None = None,
) -> Camera:
    """Camera for a named view, with seeded pose jitter.

    ``"top"`` looks straight down from 20 units; ``"oblique"`` sits 30° off
    vertical on the +x side (pins lean left in the image, rows stay
    vertical); ``"oblique_y"`` is 35° off vertical on the −y side.  The
    vertical field of view frames the whole housing.
    """
    if view not in CAMERA_PRESETS:
        raise ParameterError(f"unknown view {view!r}; choose from {tuple(CAMERA_PRESETS)}")
    dist, polar, azim, tz, fov = CAMERA_PRESETS[view]
    p, a = math.radians(polar), math.radians(azim)
    target = np.array([0.0, 0.0, tz])
    pos = target + dist * np.array(
        [math.sin(p) * math.cos(a), math.sin(p) * math.sin(a), math.cos(p)]
    )
    roll = 0.0
    if rng is not None and jitter is not None:
        pos = pos + rng.normal(0.0, jitter.camera_pos, 3)
        target = target + rng.normal(0.0, jitter.camera_target, 3)
        roll = float(rng.normal(0.0, jitter.camera_roll))
    fwd = target - pos
    fwd /= np.linalg.norm(fwd)
    # image "up" is world +y for the views looking along x, +z-ish otherwise
    up_hint = np.array([0.0, 1.0, 0.0]) if abs(math.sin(a)) < 0.5 else np.array([0.0, 0.0, 1.0])
    if abs(float(fwd @ up_hint)) > 0.99:
        up_hint = np.array([0.0, 1.0, 0.0])
    right = np.cross(fwd, up_hint)
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    if roll:
        c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
        right, up = c * right + s * up, -s * right + c * up
    R = np.stack([right, up, -fwd], axis=1)
    return Camera(view, _t(pos), _t(R), fov)


def build_scene(
    layout: str = "mixed",
    defect: Defect | None = None,
    *,
    views: Sequence[str] = VIEWS,
    rng: np.random.Generator | None = None,
    jitter: Jitter | None = None,
    pattern: str | None = None,
) -> Scene:
    """The scene of one part: housing, 27 pins, table, cameras, sun.

    Parameters
    ----------
    layout : {"square", "cylinder", "mixed"}
    defect : Defect, optional
        Applied to its pin; None builds a good part.
    views : sequence of str
        Cameras to include (see :func:`make_camera`).
    rng : numpy Generator, optional
        Source of the nominal jitter; None gives the ideal part.  The
        *same* generator state with and without ``defect`` gives the same
        nominal part (the defect draws nothing from ``rng``), which is how
        the nominal scene for a mask is made.
    jitter : Jitter, optional
        Deviations of the nominal variation (default :class:`Jitter`).
    pattern : str, optional
        Mixed-layout pattern, see :func:`pin_pattern`.
    """
    shapes = pin_pattern(layout, pattern)
    jit = jitter if jitter is not None else Jitter()
    if rng is None:
        jit = jit.scaled(0.0)
        rng = np.random.default_rng(0)
    # Draw every random number in a fixed order, independent of the defect.
    part_xy = rng.normal(0.0, jit.part_xy, 2)
    part_rot = float(rng.normal(0.0, jit.part_rot))
    pin_dxy = rng.normal(0.0, jit.pin_xy, (N_ROWS * N_COLS, 2))
    pin_dh = rng.normal(0.0, jit.pin_height, N_ROWS * N_COLS)
    pin_tilt = rng.normal(0.0, jit.pin_tilt, (N_ROWS * N_COLS, 2))
    tints = 1.0 + rng.normal(0.0, jit.tint, 3)
    sun_tilt = rng.normal(0.0, jit.sun_dir, 2)
    sun_gain = 1.0 + float(rng.normal(0.0, jit.sun_intensity))
    # each camera draws from its own stream, so a view's pose does not depend
    # on which other views are rendered
    cam_seed = int(rng.integers(2**63))
    cams = {
        v: make_camera(v, np.random.default_rng([cam_seed, zlib.crc32(v.encode())]), jit)
        for v in views
    }

    Rp = _rot("z", part_rot)
    tp = np.array([part_xy[0], part_xy[1], 0.0])
    I3 = np.eye(3)
    prims = [
        Primitive("table", "box", (0.0, 0.0, -1.5), _t(I3), (40.0, 40.0, 0.5), "table"),
        Primitive(
            "housing",
            "box",
            _t(tp + Rp @ np.array([0.0, 0.0, -HOUSING_HALF[2]])),
            _t(Rp),
            HOUSING_HALF,
            "housing",
        ),
    ]
    for k, shape in enumerate(shapes):
        row, col = divmod(k, N_COLS)
        base = np.array([(col - 1) * PITCH + pin_dxy[k, 0], (4 - row) * PITCH + pin_dxy[k, 1], 0.0])
        R = _rot("x", pin_tilt[k, 0]) @ _rot("y", pin_tilt[k, 1])
        top = PIN_TOP + pin_dh[k]
        if defect is not None and (defect.row, defect.col) == (row, col):
            if "missing" in defect.modes:
                continue
            sev = defect.severity
            if "shifted" in sev:
                d = math.radians(defect.direction)
                base = base + sev["shifted"] * np.array([math.cos(d), math.sin(d), 0.0])
            if "pushed" in sev:
                base = base - np.array([0.0, 0.0, sev["pushed"]])
            if "tilt_x" in sev:
                R = _rot("x", sev["tilt_x"]) @ R
            if "tilt_y" in sev:
                R = _rot("y", sev["tilt_y"]) @ R
        half_h = (top + PIN_FOOT) / 2.0
        centre_local = np.array([0.0, 0.0, top - half_h])  # relative to the foot
        Rw = Rp @ R
        centre = tp + Rp @ base + Rw @ centre_local
        kind = "box" if shape == "s" else "cylinder"
        prims.append(
            Primitive(
                pin_name(row, col),
                kind,
                _t(centre),
                _t(Rw),
                (PIN_HALF, PIN_HALF, float(half_h)),
                "pin",
            )
        )

    base_sun = np.asarray(SUN_DIRECTION, dtype=np.float64)
    sd = _rot("x", sun_tilt[0]) @ _rot("y", sun_tilt[1]) @ (base_sun / np.linalg.norm(base_sun))
    materials = {
        "table": Material(albedo=0.30 * tints[0], specular=0.02, shininess=8.0),
        "housing": Material(albedo=0.10 * tints[1], specular=0.10, shininess=16.0),
        "pin": Material(albedo=0.45 * tints[2], specular=0.30, shininess=30.0, metallic=True),
    }
    meta: dict[str, Any] = {"layout": layout, "pattern": "".join(shapes)}
    if defect is not None:
        meta["defect"] = {
            "modes": list(defect.modes),
            "row": defect.row,
            "col": defect.col,
            "severity": dict(defect.severity),
            "direction": defect.direction,
            "pin": pin_name(defect.row, defect.col),
        }
    return Scene(
        primitives=prims,
        materials=materials,
        cameras=cams,
        sun=Sun(_t(sd), 1.0 * sun_gain, 0.25),
        noise_sigma=float(jit.noise),
        meta=meta,
    )
