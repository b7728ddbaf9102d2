"""Credentials that follow the outputs document on disk, for clients that reconnect.

``harness rotate-credentials`` rewrites the outputs document (0600, atomic
rename) with new passwords. A long-running process read the document once, at
open; without this module every reconnect after a rotation (a Redis failover, a
pool refill, a broker restart) would present the old password and be refused.

:class:`DocumentCredentials` re-reads the document whenever a client asks for
credentials and the bytes on disk changed. A file that does not parse (half
written by a hand edit, or invalid) keeps the last good credentials and logs a
warning naming the file and the fields at fault, never a value. The clients
that can ask per connection use it through the adapters here:

* redis-py: :class:`RedisDocumentCredentials`, a ``redis.CredentialProvider``
  (redis-py calls ``get_credentials()`` in every new connection's ``AUTH``);
* psycopg_pool: :func:`timescale_kwargs`, the pool's callable ``kwargs`` (the
  pool calls it for every new connection).

kafka-python reads its SASL password only when a client is built, so Kafka
takes a new password through ``Backbone.reload_credentials()`` instead.

A source made with ``job`` (``DocumentCredentials(path, job="consumer")``) hands
out that job's logins from the full document's ``principals``, in the sections'
standard fields (:func:`backbone.job_outputs.job_document`): the runtime's
clients each log in as their job (:mod:`backbone.job_logins`), and each follows
its own job's password through a rotation (``harness rotate-credentials
--principal consumer``). On a job's own document (``job`` set in the file) the
standard fields already are that job's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from redis.credentials import CredentialProvider

from backbone.connections import ConnectionsDocument, ConnectionsError, Job, load_document
from backbone.job_outputs import job_document

__all__ = ["DocumentCredentials", "RedisDocumentCredentials", "timescale_kwargs"]

_log = logging.getLogger(__name__)


class DocumentCredentials:
    """The newest valid ``backbone.connections/v1`` document at ``path`` (thread-safe).

    ``document`` is what the caller already read (the one the clients opened
    with); without it the file is read now and must be valid. ``job``: hand out
    that job's logins (see the module docstring); ``None``: the sections as they are.
    """

    def __init__(
        self,
        path: Path | str,
        document: ConnectionsDocument | None = None,
        *,
        job: Job | None = None,
    ) -> None:
        self.path = Path(path)
        self.job = job
        self._lock = threading.Lock()
        self._raw: bytes | None = None
        if document is None:
            document = load_document(self.path)
            self._raw = self._read()
        self._good = document
        #: Valid documents adopted after the first one (a rotation bumps it).
        self.generation = 0

    def __repr__(self) -> str:
        job = f", job={self.job!r}" if self.job is not None else ""
        return f"DocumentCredentials({str(self.path)!r}{job}, generation={self.generation})"

    def for_job(self, job: Job | None) -> DocumentCredentials:
        """A source on the same file that hands out ``job``'s logins."""
        return DocumentCredentials(self.path, self._good, job=job)

    def document(self) -> ConnectionsDocument:
        """The newest valid document (for ``job``: its view of it, see the module
        docstring); the file is parsed again only if its bytes changed."""
        full = self._newest()
        if self.job is None or full.job is not None:
            return full
        return job_document(full, self.job)

    def _newest(self) -> ConnectionsDocument:
        with self._lock:
            raw = self._read()
            if raw is None or raw == self._raw:
                return self._good
            self._raw = raw
            try:
                fresh = load_document(self.path)
            except ConnectionsError as exc:
                _log.warning(
                    "the outputs document %s changed but is not usable (%s); the clients keep "
                    "the credentials of the last valid version until it is fixed",
                    self.path,
                    _first_line(exc),
                )
                return self._good
            if fresh != self._good:
                self._good = fresh
                self.generation += 1
                _log.info("outputs document %s re-read (generation %d)", self.path, self.generation)
            return self._good

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            if self._raw is not None:  # warn once per disappearance, not per connection
                _log.warning(
                    "cannot read the outputs document %s (%s); keeping the last valid credentials",
                    self.path,
                    exc.strerror,
                )
                self._raw = None
            return None


def _first_line(exc: Exception) -> str:
    # ConnectionsError names fields and what is wrong with them, never the values.
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class RedisDocumentCredentials(CredentialProvider):
    """redis-py asks this for ``(username, password)`` on every new connection."""

    def __init__(self, source: DocumentCredentials) -> None:
        self.source = source

    def __repr__(self) -> str:
        return f"RedisDocumentCredentials({self.source!r})"

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        redis_section = self.source.document().redis
        if redis_section is None or redis_section.password is None:
            raise ConnectionsError(
                f"the outputs document {self.source.path} has no redis credentials; "
                "regenerate it with `harness up`"
            )
        password = redis_section.password.get_secret_value()
        if redis_section.username:
            return redis_section.username, password
        return (password,)


def timescale_kwargs(
    source: DocumentCredentials, base: Mapping[str, Any]
) -> Callable[[], dict[str, Any]]:
    """psycopg_pool's callable ``kwargs``: ``base`` with the document's current password.

    The pool calls it for each new connection (``ConnectionPool._connect``).
    """

    def kwargs() -> dict[str, Any]:
        section = source.document().timescale
        if section is None or section.password is None:
            return dict(base)
        return {**base, "password": section.password.get_secret_value()}

    return kwargs
