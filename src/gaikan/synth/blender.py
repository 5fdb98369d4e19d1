"""Second renderer: Blender's Cycles path tracer, driven from the same scene JSON.

gaikan never imports ``bpy`` itself (``import gaikan`` must stay light, and a
Blender session is global, single-scene state that is best kept in its own
process).  It writes the jobs as JSON (:meth:`~gaikan.synth.scene.Scene.to_dict`
plus the per-image look), runs :data:`BLENDER_SCRIPT` in a subprocess and
reads back float arrays.  Two back ends run the same script:

- ``bpy``, Blender as a Python module (``pip install "gaikan[blender]"``):
  ``python -c SCRIPT -- jobs.json out/`` with this very interpreter, or with
  another Python that can ``import bpy`` given as ``--blender PATH``;
- the Blender application (e.g. Debian's ``blender`` package), given as
  ``--blender PATH`` or found on ``PATH``: ``blender -b --factory-startup
  --python-exit-code 1 --python-expr SCRIPT -- jobs.json out/``.

:func:`find_blender` picks one (explicit path, ``$GAIKAN_BLENDER``, ``bpy`` in
this Python, ``blender`` on ``PATH``, in that order); when there is none the
error names both ways to get one.

What the script renders, per image:

- the **image**: Cycles on the CPU, ``samples`` paths per pixel (Blackman–Harris
  pixel filter, OpenImageDenoise), a fixed Cycles seed and a fixed thread
  count, so the same job gives the same bytes.  Physically based materials
  (Principled BSDF): a grey dielectric table, a dark plastic housing and
  metallic pins; lighting is a key **area light** in the direction of the
  scene's sun, a large dim fill area light opposite it and a grey world.
  The linear result goes back as float32; gaikan applies the sRGB transfer
  curve (Blender's "Standard" view), adds the scene's seeded sensor noise
  and rounds to uint8 (:func:`to_uint8`).
- the **object ids**: Cycles' object-index pass (``IndexOB``, primitive
  ``k`` has pass index ``k + 1``, 0 = nothing hit), rendered with one sample
  and a 0.01-pixel filter so that each pixel holds the object its
  pixel-centre ray hits: the camera rule of :mod:`gaikan.synth.scene`, the
  same as the numpy ray caster's :func:`~gaikan.synth.raycast.render_ids`.
  Masks are made from ids, never by thresholding an image.

Per-image variation (:class:`Look`, :func:`draw_look`) comes on top of the
scene's own nominal jitter (part, pins, cameras, sun direction): the light
positions and powers and the Cycles seed vary per image, the surface
roughness per part; all drawn from seeded streams, so the same seed gives
the same files.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GaikanError, ParameterError
from .scene import Scene

__all__ = [
    "BLENDER_SCRIPT",
    "Backend",
    "BlenderError",
    "Look",
    "draw_look",
    "find_blender",
    "render_scenes",
    "srgb_encode",
    "to_uint8",
]

_ENV = "GAIKAN_BLENDER"
_ENV_OLD = "GAIKAN_BLENDER_PYTHON"  # the earlier name, still read
_DONE = "gaikan-blender-done"
_FAIL = "gaikan-blender-error "

HOW_TO_GET = (
    'install Blender as a Python module with `pip install "gaikan[blender]"` (the bpy wheel, '
    "Python 3.11), or install the Blender application (e.g. `apt install blender`) and pass "
    "--blender PATH (or set $GAIKAN_BLENDER)"
)


class BlenderError(GaikanError, RuntimeError):
    """Blender is missing, could not build a scene, or failed to render."""


# --------------------------------------------------------------------------- the look


@dataclass(frozen=True)
class Look:
    """Materials, lights and their per-image variation for the Blender renderer.

    Lengths are in pitch units (the scene's), powers in Blender watts.  The
    ``*_sd`` fields are standard deviations of the variation drawn per image
    (lights, Cycles seed) or per part (roughness) by :func:`draw_look`;
    ``Look().varied(0)`` renders every good part under the same light.

    Attributes
    ----------
    samples : int
        Cycles paths per pixel (denoised).
    key_distance, key_size, key_power :
        Key area light: distance from the part along the scene's sun
        direction, side of the square, power (× the sun's intensity).
    fill_size, fill_power :
        Fill area light, mirrored about the vertical, large and dim.
    world :
        Grey world strength per unit of the sun's ambient term.
    roughness : mapping of material name → roughness
        Principled BSDF roughness (``table``, ``housing``, ``pin``).
    metal_reflectance :
        Base colour of metallic materials (pins).
    exposure :
        Linear gain before the sRGB curve (calibrated so a good part's
        mean grey level is close to the numpy renderer's).
    light_position_sd, light_power_sd, roughness_sd :
        Per-image light offsets (pitch units, per axis), relative power
        changes, and per-part absolute roughness changes.
    """

    samples: int = 32
    key_distance: float = 30.0
    key_size: float = 16.0
    key_power: float = 9000.0
    fill_size: float = 30.0
    fill_power: float = 2000.0
    world: float = 1.0
    roughness: tuple[tuple[str, float], ...] = (("table", 0.8), ("housing", 0.4), ("pin", 0.5))
    metal_reflectance: float = 0.3
    exposure: float = 1.0
    light_position_sd: float = 0.6
    light_power_sd: float = 0.04
    roughness_sd: float = 0.03

    def varied(self, k: float) -> Look:
        """The same look with every ``*_sd`` multiplied by ``k``."""
        return Look(
            **{
                **asdict(self),
                "roughness": self.roughness,
                "light_position_sd": self.light_position_sd * k,
                "light_power_sd": self.light_power_sd * k,
                "roughness_sd": self.roughness_sd * k,
            }
        )


def draw_look(
    look: Look,
    scene: Scene,
    part_rng: np.random.Generator | None = None,
    view_rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Concrete lights, roughness and Cycles seed of one image (JSON for the script).

    Parameters
    ----------
    look : Look
    scene : Scene
        Its sun gives the key light's direction and power and the world's
        strength.
    part_rng : numpy Generator, optional
        Per-part stream (roughness); None: nominal roughness.
    view_rng : numpy Generator, optional
        Per-image stream (light offsets and powers, Cycles seed); None:
        nominal lights and seed 0.

    Returns
    -------
    dict
        ``{"lights": [...], "world": float, "roughness": {...},
        "metal_reflectance": float, "seed": int}``.
    """
    rough = dict(look.roughness)
    names = sorted(set(rough) | set(scene.materials))
    if part_rng is not None:
        dr = part_rng.normal(0.0, look.roughness_sd, len(names))
    else:
        dr = np.zeros(len(names))
    roughness = {}
    for n, d in zip(names, dr):
        m = scene.materials.get(n)
        base = rough.get(n, math.sqrt(2.0 / (m.shininess + 2.0)) if m is not None else 0.5)
        roughness[n] = float(np.clip(base + d, 0.02, 1.0))
    if view_rng is not None:
        dpos = view_rng.normal(0.0, look.light_position_sd, (2, 3))
        gains = 1.0 + view_rng.normal(0.0, look.light_power_sd, 2)
        seed = int(view_rng.integers(2**31 - 1))
    else:
        dpos, gains, seed = np.zeros((2, 3)), np.ones(2), 0
    sun = np.asarray(scene.sun.direction, dtype=np.float64)
    sun = sun / np.linalg.norm(sun)
    fill = np.array([-sun[0], -sun[1], sun[2]])
    fill = fill / np.linalg.norm(fill)
    lights = [
        {
            "name": "key",
            "position": [float(v) for v in look.key_distance * sun + dpos[0]],
            "size": float(look.key_size),
            "power": float(look.key_power * scene.sun.intensity * gains[0]),
        },
        {
            "name": "fill",
            "position": [float(v) for v in look.key_distance * fill + dpos[1]],
            "size": float(look.fill_size),
            "power": float(look.fill_power * gains[1]),
        },
    ]
    return {
        "lights": lights,
        "world": float(look.world * scene.sun.ambient),
        "roughness": roughness,
        "metal_reflectance": float(look.metal_reflectance),
        "seed": seed,
    }


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (Blender's "Standard" view) on linear values clipped to [0, 1]."""
    x = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def to_uint8(
    linear: np.ndarray,
    exposure: float = 1.0,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Linear render (H, W) float → display grey levels (H, W) uint8 with sensor noise.

    ``round(255 · srgb(exposure · linear) + N(0, noise_sigma))``, clipped;
    the noise is drawn from ``rng`` (skipped when ``noise_sigma`` is 0).
    """
    v = 255.0 * srgb_encode(float(exposure) * np.asarray(linear, dtype=np.float64))
    if noise_sigma > 0:
        if rng is None:
            raise ParameterError("to_uint8: noise_sigma > 0 needs rng (a seeded numpy Generator)")
        v = v + rng.normal(0.0, noise_sigma, v.shape)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the script

#: Run by the Blender Python: ``SCRIPT -- jobs.json out_dir``.  Writes
#: ``{k}_image.npy`` (float32 linear grey, (H, W)) and ``{k}_ids.npy``
#: (int32 object ids) per job and prints ``gaikan-blender-done N``; a scene
#: that fails to build prints ``gaikan-blender-error {"job", "part",
#: "error"}`` and exits with status 3.
BLENDER_SCRIPT = r"""
import json, math, os, sys
import bpy, bmesh, mathutils
import numpy as np

args = sys.argv[sys.argv.index("--") + 1:]
payload = json.load(open(args[0]))
out = args[1]
settings, jobs = payload["settings"], payload["jobs"]


def fail(k, part, exc):
    msg = {"job": k, "part": part, "error": type(exc).__name__ + ": " + str(exc)}
    print("gaikan-blender-error " + json.dumps(msg), flush=True)
    sys.stdout.flush()
    os._exit(3)


bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene


def unit_mesh(kind):
    # box [-1, 1]^3, or a cylinder of radius 1 and height 2 along z (smooth
    # sides, sharp rims, flat caps)
    me = bpy.data.meshes.new("unit_" + kind)
    bm = bmesh.new()
    if kind == "box":
        bmesh.ops.create_cube(bm, size=2.0)
    else:
        bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=64,
                              radius1=1.0, radius2=1.0, depth=2.0)
        for f in bm.faces:
            f.smooth = len(f.verts) == 4
        for e in bm.edges:
            e.smooth = all(f.smooth for f in e.link_faces)
    bm.to_mesh(me)
    bm.free()
    if hasattr(me, "use_auto_smooth"):  # Blender < 4.1 needs it for sharp edges
        me.use_auto_smooth = True
        me.auto_smooth_angle = math.pi
    me.materials.append(None)
    return me


meshes = {"box": unit_mesh("box"), "cylinder": unit_mesh("cylinder")}

r = scene.render
r.engine = "CYCLES"
cy = scene.cycles
cy.device = "CPU"
cy.use_adaptive_sampling = False
cy.use_animated_seed = False
cy.caustics_reflective = False
cy.caustics_refractive = False
cy.transparent_max_bounces = 0
cy.volume_bounces = 0
cy.transmission_bounces = 0
if hasattr(cy, "denoiser"):
    cy.denoiser = "OPENIMAGEDENOISE"
if hasattr(cy, "denoising_use_gpu"):
    cy.denoising_use_gpu = False
r.threads_mode = "FIXED"
r.threads = int(settings["threads"])
r.resolution_percentage = 100
r.pixel_aspect_x = r.pixel_aspect_y = 1.0
r.film_transparent = False
r.dither_intensity = 0.0
r.use_compositing = True
r.image_settings.file_format = "OPEN_EXR"
r.image_settings.color_depth = "32"
r.image_settings.exr_codec = "ZIP"
scene.view_settings.view_transform = "Standard"
scene.view_settings.look = "None"
scene.view_settings.exposure = 0.0
scene.view_settings.gamma = 1.0
scene.view_layers[0].use_pass_object_index = True
scene.use_nodes = True
tree = scene.node_tree
for n in list(tree.nodes):
    tree.nodes.remove(n)
layers = tree.nodes.new("CompositorNodeRLayers")
composite = tree.nodes.new("CompositorNodeComposite")


def clear():
    for coll in (bpy.data.objects, bpy.data.materials, bpy.data.lights, bpy.data.cameras,
                 bpy.data.worlds):
        for item in list(coll):
            coll.remove(item)


def material(name, m, look):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if m["metallic"]:
        a = float(look["metal_reflectance"]) * min(1.0, float(m["albedo"]) / 0.45)
        bsdf.inputs["Metallic"].default_value = 1.0
    else:
        a = float(m["albedo"])
        bsdf.inputs["Metallic"].default_value = 0.0
    bsdf.inputs["Base Color"].default_value = (a, a, a, 1.0)
    bsdf.inputs["Roughness"].default_value = float(look["roughness"].get(name, 0.5))
    return mat


def build(k, job):
    sc = job["scene"]
    look = job["look"]
    clear()
    mats = {}
    for name, m in sc["materials"].items():
        try:
            mats[name] = material(name, m, look)
        except Exception as exc:
            fail(k, "material " + name, exc)
    for i, p in enumerate(sc["primitives"]):
        try:
            ob = bpy.data.objects.new(p["name"], meshes[p["kind"]])
            scene.collection.objects.link(ob)
            R, c, h = p["rotation"], p["center"], p["half"]
            ob.matrix_world = mathutils.Matrix((
                (R[0] * h[0], R[1] * h[1], R[2] * h[2], c[0]),
                (R[3] * h[0], R[4] * h[1], R[5] * h[2], c[1]),
                (R[6] * h[0], R[7] * h[1], R[8] * h[2], c[2]),
                (0.0, 0.0, 0.0, 1.0),
            ))
            ob.pass_index = i + 1
            slot = ob.material_slots[0]
            slot.link = "OBJECT"
            slot.material = mats[p["material"]]
        except Exception as exc:
            fail(k, p.get("name", "primitive %d" % i), exc)
    try:
        cam = sc["cameras"][job["view"]]
        data = bpy.data.cameras.new("camera")
        data.type = "PERSP"
        data.sensor_fit = "VERTICAL"
        data.sensor_height = 24.0
        data.lens = 12.0 / math.tan(math.radians(cam["fov_y"]) / 2.0)
        data.shift_x = data.shift_y = 0.0
        data.clip_start, data.clip_end = 0.01, 1000.0
        ob = bpy.data.objects.new("camera", data)
        scene.collection.objects.link(ob)
        R, p = cam["rotation"], cam["position"]
        ob.matrix_world = mathutils.Matrix((
            (R[0], R[1], R[2], p[0]), (R[3], R[4], R[5], p[1]), (R[6], R[7], R[8], p[2]),
            (0.0, 0.0, 0.0, 1.0)))
        scene.camera = ob
    except Exception as exc:
        fail(k, "camera " + str(job["view"]), exc)
    try:
        for L in look["lights"]:
            data = bpy.data.lights.new(L["name"], "AREA")
            data.shape = "SQUARE"
            data.size = float(L["size"])
            data.energy = float(L["power"])
            ob = bpy.data.objects.new(L["name"], data)
            scene.collection.objects.link(ob)
            pos = mathutils.Vector(L["position"])
            ob.location = pos
            ob.rotation_euler = pos.normalized().to_track_quat("Z", "Y").to_euler()
        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        g = float(look["world"])
        world.node_tree.nodes.get("Background").inputs["Color"].default_value = (g, g, g, 1.0)
        scene.world = world
    except Exception as exc:
        fail(k, "lights", exc)
    W, H = job["size"]
    r.resolution_x, r.resolution_y = int(W), int(H)


def render(path, image):
    if image:
        tree.links.new(layers.outputs["Image"], composite.inputs["Image"])
    else:
        tree.links.new(layers.outputs["IndexOB"], composite.inputs["Image"])
    r.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    W, H = img.size[:]
    a = np.empty(W * H * 4, dtype=np.float32)
    img.pixels.foreach_get(a)
    bpy.data.images.remove(img)
    os.remove(path)
    return a.reshape(H, W, 4)[::-1]


for k, job in enumerate(jobs):
    build(k, job)
    if not job["ids_only"]:
        cy.samples = int(job["samples"])
        cy.seed = int(job["look"]["seed"])
        cy.use_denoising = bool(job["denoise"])
        cy.pixel_filter_type = "BLACKMAN_HARRIS"
        cy.filter_width = 1.0
        cy.max_bounces = 4
        cy.diffuse_bounces = 2
        cy.glossy_bounces = 2
        rgba = render(os.path.join(out, "%d_image.exr" % k), True)
        np.save(os.path.join(out, "%d_image.npy" % k),
                rgba[..., :3].mean(axis=-1).astype(np.float32), allow_pickle=False)
    # object ids: one pixel-centre ray per pixel
    cy.samples = 1
    cy.seed = 0
    cy.use_denoising = False
    cy.pixel_filter_type = "BOX"
    cy.filter_width = 0.01
    cy.max_bounces = 0
    rgba = render(os.path.join(out, "%d_ids.exr" % k), False)
    np.save(os.path.join(out, "%d_ids.npy" % k), np.rint(rgba[..., 0]).astype(np.int32),
            allow_pickle=False)
print("gaikan-blender-done", len(jobs), flush=True)
"""


# --------------------------------------------------------------------------- back ends


@dataclass(frozen=True)
class Backend:
    """How to run :data:`BLENDER_SCRIPT`.

    Attributes
    ----------
    kind : {"module", "executable"}
        A Python that can ``import bpy``, or the Blender application.
    path : str
    """

    kind: str
    path: str

    def command(self, *args: str) -> list[str]:
        """The subprocess command that runs the script with ``args`` after ``--``."""
        if self.kind == "executable":
            return [self.path, "-b", "--factory-startup", "--python-exit-code", "1",
                    "--python-expr", BLENDER_SCRIPT, "--", *args]  # fmt: skip
        return [self.path, "-c", BLENDER_SCRIPT, "--", *args]


def _is_blender_app(path: str) -> bool:
    """True for the Blender application (a file named ``blender…``), False for a Python."""
    return Path(path).name.lower().startswith("blender")


@functools.lru_cache(maxsize=8)
def _can_import_bpy(python: str) -> bool:
    try:
        r = subprocess.run(
            [python, "-c", "import bpy"], check=False, capture_output=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _backend_for(path: str, origin: str) -> Backend:
    exe = shutil.which(path) or (path if Path(path).is_file() else None)
    if exe is None:
        raise BlenderError(f"{origin} {path!r} does not exist; {HOW_TO_GET}")
    if _is_blender_app(exe):
        return Backend("executable", exe)
    if not _can_import_bpy(exe):
        raise BlenderError(
            f"{origin} {path!r} is neither the Blender application (a file named blender…) nor "
            f"a Python that can `import bpy`; {HOW_TO_GET}"
        )
    return Backend("module", exe)


def find_blender(explicit: str | os.PathLike | None = None) -> Backend:
    """The Blender to render with.

    Looks, in order, at ``explicit`` (``--blender PATH``: the Blender
    application or a Python with ``bpy``), ``$GAIKAN_BLENDER`` (or the older
    ``$GAIKAN_BLENDER_PYTHON``), ``bpy`` installed in this Python
    (``gaikan[blender]``; found without importing it) and ``blender`` on
    ``PATH``.

    Raises
    ------
    BlenderError
        An explicit path that is not usable, or nothing found; the message
        names both ways to install Blender.
    """
    if explicit:
        return _backend_for(str(explicit), "--blender")
    for env in (_ENV, _ENV_OLD):
        if os.environ.get(env):
            return _backend_for(os.environ[env], f"${env}")
    if importlib.util.find_spec("bpy") is not None:
        return Backend("module", sys.executable)
    app = shutil.which("blender")
    if app:
        return Backend("executable", app)
    raise BlenderError(f"the Blender renderer needs Blender: {HOW_TO_GET}")


def _check_scene(d: Mapping[str, Any], k: int) -> None:
    """Reject a scene the script cannot build, naming the part (before starting Blender)."""
    mats = d.get("materials", {})
    for i, p in enumerate(d.get("primitives", ())):
        name = p.get("name", f"primitive {i}")
        where = f"job {k}: part {name!r}"
        if p.get("kind") not in ("box", "cylinder"):
            raise ParameterError(
                f"{where}: kind must be 'box' or 'cylinder', got {p.get('kind')!r}"
            )
        if p.get("material") not in mats:
            raise ParameterError(
                f"{where}: material {p.get('material')!r} is not among the scene's materials "
                f"{sorted(mats)}"
            )
        vals = np.asarray([*p["center"], *p["rotation"], *p["half"]], dtype=np.float64)
        if vals.size != 15 or not np.isfinite(vals).all() or min(p["half"]) <= 0:
            raise ParameterError(
                f"{where}: needs finite center (3), rotation (9) and positive half extents (3)"
            )


def render_scenes(
    jobs: Sequence[Mapping[str, Any]],
    blender: str | os.PathLike | Backend | None = None,
    *,
    samples: int | None = None,
    threads: int = 1,
    look: Look | None = None,
    denoise: bool = True,
    timeout: float | None = None,
) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Render jobs in one Blender process.

    Parameters
    ----------
    jobs : sequence of mapping
        Each ``{"scene": Scene, "view": str, "size": int or (H, W),
        "ids_only": bool (default False), "look": dict (default: the
        nominal :func:`draw_look`)}``.
    blender : path or Backend, optional
        See :func:`find_blender`.
    samples : int, optional
        Cycles paths per pixel (default ``look.samples``).
    threads : int, default 1
        Cycles render threads (fixed, so results do not depend on the machine).
    look : Look, optional
    denoise : bool, default True
    timeout : float, optional
        Seconds for the whole batch.

    Returns
    -------
    list of (image float32 (H, W) linear or None when ``ids_only``, ids int32 (H, W))
        Ids: primitive ``k`` of the scene is ``k + 1``, 0 is background.

    Raises
    ------
    BlenderError
        No Blender, a scene that fails to build (the message names the job and
        the part) or a failed render (Blender's output is quoted).
    ParameterError
        A malformed scene, caught before Blender starts.
    """
    look = look or Look()
    backend = blender if isinstance(blender, Backend) else find_blender(blender)
    if int(threads) < 1:
        raise ParameterError(f"threads must be ≥ 1, got {threads}")
    payload = []
    for k, j in enumerate(jobs):
        size = j["size"]
        H, W = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
        sc = j["scene"]
        scene = sc if isinstance(sc, Scene) else Scene.from_dict(sc)
        d = scene.to_dict()
        _check_scene(d, k)
        if j["view"] not in d["cameras"]:
            raise ParameterError(
                f"job {k}: view {j['view']!r} is not among the scene's cameras {sorted(d['cameras'])}"
            )
        payload.append(
            {
                "scene": d,
                "view": j["view"],
                "size": [W, H],
                "ids_only": bool(j.get("ids_only", False)),
                "samples": int(samples if samples is not None else look.samples),
                "denoise": bool(denoise),
                "look": j.get("look") or draw_look(look, scene),
            }
        )
    if not payload:
        return []
    with tempfile.TemporaryDirectory(prefix="gaikan-blender-") as tmp:
        t = Path(tmp)
        jobs_file = t / "jobs.json"
        jobs_file.write_text(json.dumps({"settings": {"threads": int(threads)}, "jobs": payload}))
        out = t / "out"
        out.mkdir()
        try:
            r = subprocess.run(
                backend.command(str(jobs_file), str(out)),
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise BlenderError(
                f"Blender ({backend.path}) did not finish {len(payload)} renders in {timeout} s"
            ) from None
        except OSError as e:
            raise BlenderError(f"could not start Blender ({backend.path}): {e}") from None
        for line in r.stdout.splitlines():
            if line.startswith(_FAIL):
                info = json.loads(line[len(_FAIL) :])
                j = payload[info["job"]]
                raise BlenderError(
                    f"Blender could not build part {info['part']!r} of job {info['job']} "
                    f"(view {j['view']!r}, defect {j['scene']['meta'].get('defect_name', '?')!r}): "
                    f"{info['error']}"
                )
        if r.returncode != 0 or _DONE not in r.stdout:
            tail = "\n".join(
                ln for ln in (r.stdout + r.stderr).splitlines() if not ln.startswith("Fra:")
            )[-3000:]
            raise BlenderError(f"Blender ({backend.path}) failed (exit {r.returncode}):\n{tail}")
        res: list[tuple[np.ndarray | None, np.ndarray]] = []
        for k, j in enumerate(payload):
            ids = np.load(out / f"{k}_ids.npy", allow_pickle=False)
            img = None
            if not j["ids_only"]:
                img = np.load(out / f"{k}_image.npy", allow_pickle=False)
            res.append((img, ids))
    return res
