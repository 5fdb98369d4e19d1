"""Opening the station database: where it lives, the engine, the schema upgrade.

- :func:`data_dir`: ``$GAIKAN_HOME``, else ``$XDG_DATA_HOME/gaikan``, else
  ``~/.local/share/gaikan``.
- :func:`resolve_url`: ``None`` → SQLite ``records.db`` in the data
  directory; a plain path → SQLite at that path; ``sqlite:///…`` and
  ``postgresql://…`` (driven by psycopg 3) as given.
- :func:`make_engine`: SQLite in WAL mode with ``synchronous=FULL`` (a
  committed record survives a crash of the process and of the machine) and
  a busy timeout, so several processes can share one file.
- :func:`upgrade`: Alembic migrations to the newest revision, at every open;
  a database written by a newer gaikan is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import GaikanError, ParameterError

__all__ = [
    "HEAD",
    "RecordsError",
    "current_revision",
    "data_dir",
    "make_engine",
    "resolve_url",
    "sqlite_path",
    "upgrade",
]

#: The newest schema revision this gaikan knows.
HEAD = "0001"
_MIGRATIONS = Path(__file__).with_name("migrations")


class RecordsError(GaikanError):
    """The station database cannot be opened or used (unreachable, newer schema …)."""


def data_dir() -> Path:
    """Where the station keeps its database and images by default."""
    if os.environ.get("GAIKAN_HOME"):
        return Path(os.environ["GAIKAN_HOME"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "gaikan"


def resolve_url(url: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL for ``--db`` (see the module docstring)."""
    if url is None:
        return f"sqlite:///{data_dir() / 'records.db'}"
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if text.startswith(("postgresql+", "sqlite:")):
        return text
    if "://" in text:
        raise ParameterError(
            f"--db {text!r}: use a file path, sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in-memory)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Any:
    """An engine for a resolved URL; creates a SQLite file's folder."""
    from sqlalchemy import create_engine, event

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if not url.startswith("postgresql"):
        raise ParameterError(f"--db {url!r}: only SQLite and PostgreSQL are supported")
    return create_engine(url, pool_pre_ping=True)


def _config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Any) -> str | None:
    """The schema revision the database is at (None when empty)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Any) -> None:
    """Migrate the database to :data:`HEAD`; refuse one from a newer gaikan.

    On PostgreSQL an advisory lock serialises stations opening at once.
    """
    from alembic import command
    from sqlalchemy import text

    rev = current_revision(engine)
    if rev == HEAD:
        return
    known = {p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py")}
    if rev is not None and rev not in known:
        raise RecordsError(
            f"the database is at schema revision {rev}, which this gaikan does not know "
            "(written by a newer gaikan?); upgrade gaikan or use another --db"
        )
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4711015)"))
        command.upgrade(_config(conn), "head")
