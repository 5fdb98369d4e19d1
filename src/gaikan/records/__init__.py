"""The station's memory: every inspection recorded in a database, with its images.

- :class:`RecordStore` (:mod:`.store`): add, get, query (filters, paging),
  review, stats, model versions, the watch journal and the MQTT outbox.
- :class:`Filters` (:mod:`.query`), :class:`Retention` (:mod:`.retention`).
- :func:`record_results` (:mod:`.batch`): a batch run's results into a store.
- Schema: SQLAlchemy models (:mod:`.models`), Alembic migrations run at open
  (:mod:`.schema`); SQLite (WAL) in :func:`data_dir` by default, PostgreSQL
  for a shared line database.

Needs the ``station`` extra (``pip install gaikan[station]``); importing
:mod:`gaikan` does not import this package.
"""

from __future__ import annotations

from .batch import record_results
from .blobs import sha256
from .query import VERDICTS, Filters
from .record import ModelVersion, Record, Review
from .retention import KEEP_CHOICES, Retention, parse_bytes
from .schema import HEAD, RecordsError, data_dir, resolve_url
from .stats import Bucket
from .store import RecordNotFound, RecordStore

__all__ = [
    "HEAD",
    "KEEP_CHOICES",
    "VERDICTS",
    "Bucket",
    "Filters",
    "ModelVersion",
    "Record",
    "RecordNotFound",
    "RecordStore",
    "RecordsError",
    "Retention",
    "Review",
    "data_dir",
    "parse_bytes",
    "record_results",
    "resolve_url",
    "sha256",
]
