"""Alembic migrations of the station database, run by :class:`gaikan.records.RecordStore`.

Revisions live in ``versions/``; :func:`gaikan.records.schema.upgrade`
applies them at open (no ``alembic.ini`` needed).  A new revision is added
by hand, next to the previous one, with ``down_revision`` set to it.
"""
