"""gaikan on a ``dask.distributed`` cluster (extra ``gaikan[distributed]``).

- :mod:`.cluster`: :func:`open_client` (``--dask local:N`` or a scheduler
  address) and the worker plugin that carries a model file to each worker once;
- :mod:`.inspect`: ``gaikan inspect --dask`` (:func:`inspect_files_dask`,
  :func:`run_inspection_dask`);
- :mod:`.fit`: ``gaikan fit --dask`` (:func:`fit_files_dask`): closed-form
  fits from per-batch statistics reduced in a tree on the cluster;
- :mod:`.padim`: the same for PaDiM, and PatchCore's distributed coreset
  approximation.

``import gaikan`` never imports this package (nor dask); ``gaikan inspect|fit --dask`` do.
"""

from __future__ import annotations

from .cluster import ModelPlugin, open_client
from .fit import DASK_FIT_KINDS, DaskFit, fit_files_dask
from .inspect import inspect_files_dask, run_inspection_dask

__all__ = [
    "DASK_FIT_KINDS",
    "DaskFit",
    "ModelPlugin",
    "fit_files_dask",
    "inspect_files_dask",
    "open_client",
    "run_inspection_dask",
]
