"""Optional high-fidelity renderer: Blender (Cycles) in a separate Python process.

``bpy`` wheels pin their own Python and numpy and weigh about 1 GB, so gaikan
never imports ``bpy``: it writes the scenes as JSON (:meth:`Scene.to_dict`),
runs a small script with a Python interpreter that *can* import ``bpy``
(``--blender-python PATH``, or the ``GAIKAN_BLENDER_PYTHON`` environment
variable) and reads back PNGs.  The camera model is the one of
:mod:`gaikan.synth.scene` (pinhole, vertical field of view, square pixels,
pixel-centre rays), so masks agree with the numpy ray caster.

Per job the script renders

- the image with Cycles on the CPU (``samples`` paths per pixel, denoised),
  standard view transform (sRGB, like the numpy renderer's 1/2.2 gamma);
- an object-id pass with the Workbench engine: flat lighting, object colour
  ``8·id/255``, anti-aliasing and dithering off, raw view transform, so each
  pixel holds the id of the object its centre ray hits.

Boxes are Blender cubes and cylinders 256-sided prisms, scaled and posed by
the primitive's matrix; shading (Principled BSDF, a sun, a grey world) is
close to but not the same as the numpy renderer's, which is the point of a
second renderer.  Sensor noise is added by gaikan afterwards, from the same
seeded streams as the numpy path.

Status: this path could not be run where it was written (no Blender there);
the test ``tests/test_synth_blender.py`` runs it when a Blender Python is
available and is skipped otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import GaikanError
from .scene import Scene

__all__ = ["BLENDER_SCRIPT", "decode_ids", "find_blender_python", "render_dataset", "render_scenes"]

_ENV = "GAIKAN_BLENDER_PYTHON"

#: Script run by the Blender Python: ``python script.py jobs.json out_dir``.
BLENDER_SCRIPT = r"""
import json, math, os, sys
import bpy, mathutils

jobs = json.load(open(sys.argv[-2]))
out = sys.argv[-1]


def new_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def add_primitives(sc, ids_only):
    mats = {}
    for name, m in sc["materials"].items():
        mat = bpy.data.materials.new(name)
        mat.use_nodes = True
        bsdf = mat.node_tree.nodes.get("Principled BSDF")
        a = float(m["albedo"])
        bsdf.inputs["Base Color"].default_value = (a, a, a, 1.0)
        bsdf.inputs["Roughness"].default_value = math.sqrt(2.0 / (float(m["shininess"]) + 2.0))
        for key in ("Specular IOR Level", "Specular"):
            if key in bsdf.inputs:
                bsdf.inputs[key].default_value = min(1.0, float(m["specular"]) * 2.0)
                break
        mats[name] = mat
    for i, p in enumerate(sc["primitives"]):
        if p["kind"] == "box":
            bpy.ops.mesh.primitive_cube_add(size=2.0)
        else:
            bpy.ops.mesh.primitive_cylinder_add(vertices=256, radius=1.0, depth=2.0)
        ob = bpy.context.active_object
        ob.name = p["name"]
        R, c, h = p["rotation"], p["center"], p["half"]
        ob.matrix_world = mathutils.Matrix((
            (R[0] * h[0], R[1] * h[1], R[2] * h[2], c[0]),
            (R[3] * h[0], R[4] * h[1], R[5] * h[2], c[1]),
            (R[6] * h[0], R[7] * h[1], R[8] * h[2], c[2]),
            (0.0, 0.0, 0.0, 1.0),
        ))
        ob.data.materials.append(mats[p["material"]])
        v = 8.0 * (i + 1) / 255.0
        ob.color = (v, v, v, 1.0)


def add_camera(scene, cam, W, H):
    data = bpy.data.cameras.new("cam")
    data.type = "PERSP"
    data.sensor_fit = "VERTICAL"
    data.sensor_height = 24.0
    data.lens = 12.0 / math.tan(math.radians(cam["fov_y"]) / 2.0)
    data.shift_x = data.shift_y = 0.0
    data.clip_start, data.clip_end = 0.01, 1000.0
    ob = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(ob)
    R, p = cam["rotation"], cam["position"]
    ob.matrix_world = mathutils.Matrix((
        (R[0], R[1], R[2], p[0]), (R[3], R[4], R[5], p[1]), (R[6], R[7], R[8], p[2]), (0, 0, 0, 1)))
    scene.camera = ob
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = W, H, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.dither_intensity = 0.0
    r.film_transparent = False


def add_light(scene, sun):
    data = bpy.data.lights.new("sun", "SUN")
    data.energy = float(sun["intensity"]) * math.pi
    data.angle = math.radians(0.5)
    ob = bpy.data.objects.new("sun", data)
    scene.collection.objects.link(ob)
    d = mathutils.Vector(sun["direction"]).normalized()
    ob.rotation_euler = d.to_track_quat("Z", "Y").to_euler()  # light shines along local -Z
    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    bg = world.node_tree.nodes.get("Background")
    g = float(sun["ambient"])
    bg.inputs["Color"].default_value = (g, g, g, 1.0)
    scene.world = world


view_transforms = {}
for k, job in enumerate(jobs):
    sc = job["scene"]
    W, H = job["size"]
    scene = new_scene()
    add_primitives(sc, job["ids_only"])
    add_camera(scene, sc["cameras"][job["view"]], W, H)
    add_light(scene, sc["sun"])
    r = scene.render
    r.image_settings.file_format = "PNG"
    r.image_settings.color_depth = "8"
    if not job["ids_only"]:
        r.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(job.get("samples", 64))
        scene.cycles.use_denoising = True
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        r.image_settings.color_mode = "BW"
        r.filepath = os.path.join(out, f"{k}_image.png")
        bpy.ops.render.render(write_still=True)
    r.engine = "BLENDER_WORKBENCH"
    sh = scene.display.shading
    sh.light = "FLAT"
    sh.color_type = "OBJECT"
    sh.show_shadows = False
    sh.show_cavity = False
    sh.show_object_outline = False
    sh.show_specular_highlight = False
    sh.background_type = "WORLD"
    scene.world.color = (0.0, 0.0, 0.0)
    scene.display.render_aa = "OFF"
    try:  # "Raw" writes object colours unchanged; older configs may lack it
        scene.view_settings.view_transform = "Raw"
    except TypeError:
        scene.view_settings.view_transform = "Standard"
    view_transforms[k] = scene.view_settings.view_transform
    r.image_settings.color_mode = "RGB"
    r.filepath = os.path.join(out, f"{k}_ids.png")
    bpy.ops.render.render(write_still=True)
json.dump(view_transforms, open(os.path.join(out, "view_transforms.json"), "w"))
print("gaikan-blender-done", len(jobs))
"""


def _is_blender_app(path: str) -> bool:
    """True for the Blender application itself (``blender``), False for a Python with bpy."""
    return Path(path).name.lower().startswith("blender")


def _command(path: str, script: str, *args: str) -> list[str]:
    if _is_blender_app(path):
        return [path, "--background", "--factory-startup", "--python", script, "--", *args]
    return [path, script, *args]


@functools.lru_cache(maxsize=8)
def _can_import_bpy(python: str) -> bool:
    if _is_blender_app(python):
        cmd = [python, "--background", "--factory-startup", "--python-expr", "import bpy"]
    else:
        cmd = [python, "-c", "import bpy"]
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def find_blender_python(explicit: str | os.PathLike | None = None) -> str | None:
    """A Python interpreter that can ``import bpy``: ``explicit``, else ``$GAIKAN_BLENDER_PYTHON``.

    The Blender application itself (a path whose name starts with
    ``blender``) works too: it is run as ``blender --background
    --factory-startup --python script -- args``.  Returns None when neither
    is given or it cannot import ``bpy`` (never this process's own
    interpreter: gaikan does not import ``bpy``).
    """
    cand = explicit or os.environ.get(_ENV)
    if not cand:
        return None
    cand = str(cand)
    return cand if _can_import_bpy(cand) else None


def decode_ids(channel: np.ndarray, n_ids: int, srgb: bool = False) -> np.ndarray:
    """Object ids from the Workbench pass: object ``k`` is coloured ``8·k/255`` (0 = background).

    With a raw view transform the 8-bit value is ``8·k``; with the standard
    (sRGB) one it is the sRGB encoding of that linear value.  Each pixel
    takes the id of the nearest expected value.
    """
    lin = 8.0 * np.arange(n_ids + 1) / 255.0
    if srgb:
        enc = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    else:
        enc = lin
    expected = 255.0 * enc
    v = channel.astype(np.float64)[..., None]
    return np.abs(v - expected).argmin(axis=-1).astype(np.int32)


def render_scenes(
    jobs: Sequence[Mapping[str, Any]],
    blender_python: str | os.PathLike | None = None,
    *,
    samples: int = 64,
    timeout: float | None = None,
) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Render jobs in one Blender process.

    Parameters
    ----------
    jobs : sequence of mapping
        Each ``{"scene": Scene, "view": str, "size": int or (H, W),
        "ids_only": bool}``.
    blender_python : path, optional
        See :func:`find_blender_python`.
    samples : int, default 64
        Cycles samples per pixel.
    timeout : float, optional
        Seconds for the whole batch.

    Returns
    -------
    list of (image uint8 (H, W) or None when ``ids_only``, ids int32 (H, W))

    Raises
    ------
    GaikanError
        No usable Blender Python, or Blender failed (its output is quoted).
    """
    py = find_blender_python(blender_python)
    if py is None:
        raise GaikanError(
            f"no Python with bpy found (got {blender_python or os.environ.get(_ENV)!r}); install Blender's "
            f"Python module in a separate environment (`python3.11 -m venv bpyenv && bpyenv/bin/pip install bpy`) "
            f"and pass --blender-python bpyenv/bin/python or set {_ENV}"
        )
    payload = []
    for j in jobs:
        size = j["size"]
        H, W = (size, size) if np.ndim(size) == 0 else size
        sc = j["scene"]
        if len(sc.primitives if isinstance(sc, Scene) else sc["primitives"]) > 31:
            raise GaikanError("the Blender id pass encodes at most 31 primitives per scene")
        payload.append(
            {
                "scene": sc.to_dict() if isinstance(sc, Scene) else sc,
                "view": j["view"],
                "size": [int(W), int(H)],
                "ids_only": bool(j.get("ids_only", False)),
                "samples": int(samples),
            }
        )
    with tempfile.TemporaryDirectory(prefix="gaikan-blender-") as tmp:
        t = Path(tmp)
        (t / "jobs.json").write_text(json.dumps(payload))
        (t / "render.py").write_text(BLENDER_SCRIPT)
        out = t / "out"
        out.mkdir()
        r = subprocess.run(
            _command(py, str(t / "render.py"), str(t / "jobs.json"), str(out)),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0 or "gaikan-blender-done" not in r.stdout:
            raise GaikanError(
                f"Blender render failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}"
            )
        transforms = json.loads((out / "view_transforms.json").read_text())
        res = []
        for k, j in enumerate(payload):
            ids_rgb = np.asarray(Image.open(out / f"{k}_ids.png").convert("RGB"))
            n_ids = len(j["scene"]["primitives"])
            ids = decode_ids(ids_rgb[..., 0], n_ids, srgb=transforms.get(str(k)) != "Raw")
            img = None
            if not j["ids_only"]:
                img = np.asarray(Image.open(out / f"{k}_image.png").convert("L")).copy()
            res.append((img, ids))
    return res


def render_dataset(
    out: Path,
    tasks: Sequence[tuple[str, str, int]],
    cfg: Mapping[str, Any],
    blender_python: str | os.PathLike | None,
    build: Callable[..., tuple[Scene, Scene | None]],
    write: Callable[..., list[dict[str, Any]]],
    chunk: int = 16,
) -> Iterator[list[dict[str, Any]]]:
    """Blender back end of :func:`gaikan.synth.make_dataset`: yields each sample's label records."""
    from .dataset import _noise_rng, defect_mask

    if cfg.get("supersample", 1) != 1:
        print("gaikan synth: --supersample is ignored by the Blender renderer", file=sys.stderr)
    views, size = cfg["views"], cfg["size"]
    for start in range(0, len(tasks), chunk):
        built = []
        jobs = []
        for split, defect, index in tasks[start : start + chunk]:
            scene, nominal = build(
                defect, layout=cfg["layout"], views=views, seed=cfg["seed"], split=split, index=index,
                severity=cfg["severity"], jitter=cfg["jitter"], pattern=cfg["pattern"],
            )  # fmt: skip
            built.append((scene, nominal))
            for v in views:
                jobs.append({"scene": scene, "view": v, "size": size, "ids_only": False})
                if nominal is not None:
                    jobs.append({"scene": nominal, "view": v, "size": size, "ids_only": True})
        results = iter(render_scenes(jobs, blender_python))
        for scene, nominal in built:
            rendered = []
            for v in views:
                img, ids = next(results)
                nids = next(results)[1] if nominal is not None else None
                noisy = img.astype(np.float64)
                if scene.noise_sigma > 0:
                    noisy = noisy + _noise_rng(scene, v).normal(0.0, scene.noise_sigma, img.shape)
                img8 = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
                rendered.append((img8, defect_mask(scene, ids, nominal, nids)))
            yield write(out, scene, cfg, rendered)
