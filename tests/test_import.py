import subprocess
import sys

import gaikan

HEAVY = ["torch", "timm", "fastapi", "uvicorn", "bpy", "onnxruntime", "matplotlib", "starlette"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_gaikan_stays_light():
    mods = _modules_after("import gaikan")
    assert not [m for m in HEAVY if m in mods]
    assert "gaikan.deep" not in mods and "gaikan.service" not in mods


def test_cli_help_stays_light():
    mods = _modules_after("from gaikan.cli import cli")
    assert not [m for m in ["torch", "timm", "fastapi", "uvicorn", "bpy"] if m in mods]


def test_all_matches_exports():
    assert sorted(gaikan.__all__) == sorted(set(gaikan.__all__))
    for name in gaikan.__all__:
        assert hasattr(gaikan, name), name
    public = {n for n in dir(gaikan) if not n.startswith("_")} - {
        "cli",
        "detectors",
        "errors",
        "io",
        "modelfile",
        "patches",
        "taguchi",
        "metrics",
        "report",
        "datasets",
        "benchmark",
        "annotations",
        "synth",
        "deep",
        "service",
        "inspection",
        "offline",
        "tiling",
        "autoselect",
        "records",
        "runtime",
        "distributed",
        "watch",
        "mqtt",
        "i18n",
        "geometry",
    }
    assert public <= set(gaikan.__all__), public - set(gaikan.__all__)
