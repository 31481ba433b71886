"""Leases: an exclusive, expiring claim on a name, kept in the engine so that every esrank
process, on any machine, honours it.

A lease is one document in `esrank-leases`, created only if absent (the engine refuses a second
create), renewed while its holder works and deleted when it is done; every renewal, takeover
and release is a compare-and-set on the document's version, on both engines. A holder that
dies stops renewing: its lease expires `ttl` seconds after the last renewal and the next claim
takes it over. Expiry compares wall clocks, so the clocks of the machines that share a lease
must agree to well within `ttl`.

>>> with Lease(engine, "index:products", "esrank index"):   # doctest: +SKIP
...     build_and_swap()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from esrank.core.errors import EngineError, EsrankError
from esrank.core.stamps import utc
from esrank.engine import Engine
from esrank.engine.cluster import SMALL_INDEX

log = logging.getLogger(__name__)

LEASES_INDEX = "esrank-leases"
MAPPING = {"settings": SMALL_INDEX,
           "mappings": {"dynamic": False, "properties": {"expires": {"type": "double"}}}}
TTL = 60.0  # seconds a lease outlives its holder's last renewal


class LeaseHeldError(EsrankError):
    """Another run holds the lease; nothing was changed."""


class LeaseLostError(EsrankError):
    """The lease expired (renewals failed) or was taken over while its holder worked."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: the operation, where it runs, since when, and until when (epoch
    seconds) unless it is renewed."""

    operation: str
    owner: str  # host:pid
    since: str  # ISO UTC
    expires: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, d: dict) -> Holder:
        return cls(str(d.get("operation", "?")), str(d.get("owner", "?")),
                   str(d.get("since", "?")), float(d.get("expires", 0.0)))


class Lease:
    """Hold the lease on `name` for a `with` block; entering raises LeaseHeldError while a
    live holder has it. `check()` raises LeaseLostError once it could not be kept."""

    def __init__(self, engine: Engine, name: str, operation: str, *, ttl: float = TTL):
        self.engine, self.name, self.operation, self.ttl = engine, name, operation, ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._since = utc()
        self._version: dict | None = None
        self._expires = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.engine.ensure_index(LEASES_INDEX, MAPPING)
        self._claim()
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True,
                                         name=f"lease {self.name}")
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._lost is None:
            try:
                self.engine.delete_document(LEASES_INDEX, self.name, self._version)
            except EngineError as err:  # expired and taken, or the engine is gone: it expires
                log.warning("lease %s was not released (%s); it expires by itself", self.name,
                            err)

    def check(self) -> None:
        """Raise LeaseLostError when the lease may no longer be this holder's."""
        if self._lost is None and time.time() >= self._expires:
            self._lost = "it was not renewed in time"
        if self._lost is not None:
            raise LeaseLostError(f"lost the lease on {self.name!r}: {self._lost}; nothing "
                                 "more was changed")

    def _write(self, version: dict | None) -> None:
        """Claim (`version` None: only if absent) or renew the lease for `ttl` seconds."""
        expires = time.time() + self.ttl
        holder = Holder(self.operation, self.owner, self._since, expires)
        self._version = self.engine.put_document(LEASES_INDEX, self.name, holder.to_dict(),
                                                 version, visible=False)
        self._expires = expires

    def _claim(self) -> None:
        try:
            self._write(None)
            return
        except EngineError as exc:
            if exc.status != 409:
                raise
        found = self.engine.get_document(LEASES_INDEX, self.name)
        if found is None:  # released in between: claim afresh
            return self._claim()
        source, version = found
        holder = Holder.from_dict(source)
        if holder.expires > time.time():
            raise LeaseHeldError(
                f"{self.name!r} is held by {holder.operation} on {holder.owner} since "
                f"{holder.since} (until {utc(at=holder.expires)} unless renewed); nothing was "
                "changed. Wait for that run to end; if it died, its lease expires by itself "
                f"(at most {self.ttl:.0f} s after its last renewal)")
        try:  # expired: take it over, unless another claim took it first
            self._write(version)
        except EngineError as exc:
            if exc.status == 409:
                raise LeaseHeldError(f"{self.name!r} was just taken over by another run; "
                                     "nothing was changed") from exc
            raise
        log.warning("took over the expired lease on %s from %s (%s)", self.name,
                    holder.owner, holder.operation)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self._write(self._version)
            except EngineError as exc:
                if exc.status in (404, 409):
                    self._lost = "another run took it over"
                    return
                log.warning("could not renew the lease on %s (%s); retrying", self.name, exc)
