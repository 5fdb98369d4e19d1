"""The cluster: clients for ``--dask ADDRESS|local:N`` and the model-carrying worker plugin."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

from .._optional import require
from ..errors import ParameterError

try:  # the plugin base class; the module still imports without dask (for docs, --help)
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover - without the distributed extra
    _PluginBase = object  # type: ignore[assignment,misc]

__all__ = ["ModelPlugin", "open_client"]

#: Models loaded on this (worker) process, by the model file's SHA-256.
_MODELS: dict[str, Any] = {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelPlugin(_PluginBase):
    """Worker plugin that loads one model file on each worker, once.

    Parameters
    ----------
    data : bytes
        The model file's bytes (verified by :func:`gaikan.load` on the worker).

    Notes
    -----
    Registered under ``name`` (from the SHA-256), so registering the same
    model twice is a no-op, and workers that join later get it too.
    """

    idempotent = True

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha = _sha256(data)
        self.name = f"gaikan-model-{self.sha[:16]}"

    def setup(self, worker: Any = None) -> None:
        _load_model(self.sha, self.data)

    def teardown(self, worker: Any = None) -> None:
        _MODELS.pop(self.sha, None)


def _load_model(sha: str, data: bytes) -> Any:
    """The model of ``data`` on this process, loaded on first use."""
    model = _MODELS.get(sha)
    if model is None:
        from .. import load

        fd, tmp = tempfile.mkstemp(suffix=".gaikan")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            model = load(tmp)
        finally:
            os.unlink(tmp)
        _MODELS[sha] = model
    return model


def open_client(address: Any) -> tuple[Any, Callable[[], None]]:
    """A Dask client for ``address`` and the function that closes what was opened.

    Parameters
    ----------
    address : str or distributed.Client
        ``"local:N"`` (a cluster of N worker processes on loopback, one
        thread each), a scheduler address such as ``"tcp://host:8786"``, or
        an existing client (left open).

    Raises
    ------
    ParameterError
        A malformed ``local:N``.
    ImportError
        dask.distributed is not installed (``pip install 'gaikan[distributed]'``).
    """
    distributed = require("distributed", "distributed")
    if isinstance(address, distributed.Client):
        return address, lambda: None
    text = str(address).strip()
    m = re.fullmatch(r"local:(\d+)", text)
    if text.startswith("local:") and (m is None or int(m.group(1)) < 1):
        raise ParameterError(
            f"--dask {text!r}: use local:N with N ≥ 1 worker processes, or a scheduler "
            "address such as tcp://host:8786"
        )
    if m is not None:
        import dask

        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands
        # every freed image batch back to the OS and page-faults it in again on
        # the next: measured 2.0-2.6x slower SOARTC batches (2,000 images on
        # local:1: 4.9-6.3 s with it, 2.4-2.5 s without).  The nannies read
        # this when they are built, so restarted workers keep it too.
        environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = distributed.LocalCluster(
                n_workers=int(m.group(1)),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",  # any free port: never collide with another cluster
            )
        client = distributed.Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    client = distributed.Client(text)
    return client, client.close
