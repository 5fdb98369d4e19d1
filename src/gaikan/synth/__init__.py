"""Synthetic inspection data: pin connectors with planted defects and exact masks.

A connector housing holds a 3-column × 9-row array of pins (square prisms,
cylinders or a mixed pattern).  One pin may be ``missing``, ``pushed`` in,
``shifted``, or tilted (``tilt_x`` / ``tilt_y``), or a ``+``-combination of
these.  Each part is rendered from several cameras (``top`` and ``oblique``
by default) by an analytic numpy ray caster; the object-id buffer gives the
pixel-exact mask: the union of the defective pin's silhouette in the defect
scene and in the same part without the defect (so a missing pin has a mask).

In memory (no disk)::

    from gaikan.synth import render_sample
    img, mask, label = render_sample("pushed", view="oblique", size=128, seed=0, index=3)
    # img: (128, 128) uint8, mask: (128, 128) bool, label: dict (pin, severity, camera, …)
    good, _, _ = render_sample("good", split="train", index=0)

To disk (MVTec AD layout per view, plus ``labels.jsonl``)::

    from gaikan.synth import make_dataset
    make_dataset("out", layout="mixed", n_good=200, n_test_good=50, n_defect=30,
                 views=("top", "oblique"), size=128, seed=0, workers=2)

or ``gaikan synth OUT_DIR ...`` on the command line.  The same seed gives
byte-identical files; ``render_sample(defect, split=s, index=i)`` equals
file ``i`` of that split.

Modules: :mod:`.scene` (renderer-independent description, defects,
cameras), :mod:`.raycast` (numpy renderer), :mod:`.dataset` (samples and
folders), :mod:`.blender` (the Blender/Cycles renderer, run in a subprocess:
``make_dataset(..., renderer="blender")``, ``gaikan[blender]``).  Imports
point one way: dataset → raycast, blender → scene.
"""

from __future__ import annotations

from .dataset import (
    DEFAULT_DEFECTS,
    build_sample_scenes,
    count_images,
    defect_mask,
    iter_labels,
    make_dataset,
    render_sample,
    render_views,
    render_views_blender,
)
from .raycast import render, render_ids
from .scene import (
    DEFAULT_SEVERITY,
    DEFECT_MODES,
    LAYOUTS,
    VIEWS,
    Camera,
    Defect,
    Jitter,
    Material,
    Primitive,
    Scene,
    Sun,
    build_scene,
    make_camera,
    pin_name,
    sample_defect,
)

__all__ = [
    "DEFAULT_DEFECTS",
    "DEFAULT_SEVERITY",
    "DEFECT_MODES",
    "LAYOUTS",
    "VIEWS",
    "Camera",
    "Defect",
    "Jitter",
    "Material",
    "Primitive",
    "Scene",
    "Sun",
    "build_sample_scenes",
    "build_scene",
    "count_images",
    "defect_mask",
    "iter_labels",
    "make_camera",
    "make_dataset",
    "pin_name",
    "render",
    "render_ids",
    "render_sample",
    "render_views",
    "render_views_blender",
    "sample_defect",
]
