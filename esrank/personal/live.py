"""Live profiles: the sidecar folds each accepted /events action into its shopper's profile
at once (`ProfileState`, the batch build's own accumulator), so the next search reads it,
and writes the changed profiles to the profile index behind the request (`store_pending`,
called by the sidecar's background writer).

Per action: the product's facts (a bounded cache, else one catalogue search per request),
the shopper's profile (the app's profile cache, else one GET), one `ProfileState.add` on a
copy (O(tracked brands)). What each shopper gained since the last write is kept as a delta
of the same sums; a write reads the stored states (one realtime _mget), adds the deltas and
bulk-writes the results, so actions another sidecar stored meanwhile are kept: the sums are
additive. A profile read from the store before its delta was written has the delta added.

>>> live = LiveProfiles(app, app_profile_cache)     # doctest: +SKIP
>>> live.record(accepted_events, now=time.time())   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

from esrank.catalogue.lookup import ProductFacts, product_facts
from esrank.core.errors import EngineError
from esrank.personal.shopper import Profile, ProfileState, load_profile, save_profiles
from esrank.ubi.log import UbiEvent

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # shoppers whose unwritten changes a sidecar holds; more: dropped
MAX_FACTS = 50_000  # products whose brand and price a sidecar keeps (about 10 MB)
_MISSING = object()


class LiveProfiles:
    """The live profiles of one sidecar. `cache` is the app's profile cache (`get(key,
    load)`, `put(key, value)`): the updated profile goes there, so the next search reads it.
    Thread-safe: request threads record, one writer thread stores."""

    def __init__(self, app, cache, *, max_pending: int = MAX_PENDING,
                 max_facts: int = MAX_FACTS):
        self._app, self._cache = app, cache
        self._max_pending, self._max_facts = max_pending, max_facts
        self._pending: dict[str, ProfileState] = {}  # user -> actions not yet stored
        self._writing: tuple[float, dict[str, ProfileState]] = (0.0, {})  # a write under way
        self._facts: OrderedDict[str, ProductFacts | None] = OrderedDict()
        self._lock = threading.RLock()
        self.dropped = 0  # actions not applied: MAX_PENDING shoppers waiting, engine failing

    def profile(self, user_id: str) -> Profile | None:
        """The shopper's profile: cached, else stored with their unwritten actions added."""
        cached = self._cache.peek(user_id, _MISSING)
        if cached is not _MISSING:
            return cached
        loaded = self._load(user_id)  # the engine's GET, not under the lock
        with self._lock:  # an update cached meanwhile is newer than what was read: it wins
            return self._cache.get(user_id, lambda: loaded)

    def _load(self, user_id: str) -> Profile | None:
        s = self._app.settings
        stored = load_profile(self._app.engine, user_id, s.profiles_index)
        with self._lock:
            deltas = [self._pending.get(user_id)]
            started, writing = self._writing
            if stored is None or stored.updated < started:  # that write has not landed yet
                deltas.insert(0, writing.get(user_id))
            for delta in filter(None, deltas):
                stored = _with(stored, delta, user_id, delta.ref)
            return stored

    def record(self, events: Iterable[UbiEvent], now: float) -> int:
        """Fold accepted events (verified: shown by their query) into their shoppers'
        profiles; returns how many actions were applied (events without a user, on a product
        the catalogue lacks or past the pending bound are not)."""
        acted = [e for e in events if e.client_id and e.doc_id and e.action != "impression"]
        try:
            return self._record(acted, now)
        except EngineError as exc:  # the events are queued for UBI all the same
            log.warning("profiles: %d actions not applied (%s); `esrank profiles build` "
                        "reads them from UBI", len(acted), exc)
            self.dropped += len(acted)
            return 0

    def _record(self, acted: list[UbiEvent], now: float) -> int:
        facts = self.facts({e.doc_id for e in acted}) if acted else {}
        applied = 0
        for e in acted:
            if facts.get(e.doc_id) is None:
                continue
            loaded = self.profile(e.client_id)  # a cache miss reads the store: not locked
            with self._lock:
                current = self._cache.peek(e.client_id, loaded)  # the latest
                applied += self._apply(e, current, facts[e.doc_id], now)
        return applied

    def _apply(self, e: UbiEvent, current: Profile | None, facts: ProductFacts,
               now: float) -> int:
        user = e.client_id
        state = (current.state.copy() if current is not None and current.state is not None
                 else ProfileState())  # none yet, or stored before states were kept
        weight = state.weights.get(e.action)
        if not weight:
            return 0
        delta = self._pending.get(user)
        if delta is None:
            if len(self._pending) >= self._max_pending:
                self.dropped += 1
                if self.dropped % 1000 == 1:  # the first, then one line per 1,000
                    log.warning("profiles: %d shoppers' changes wait to be stored; %d "
                                "actions not applied so far (they are in UBI)",
                                len(self._pending), self.dropped)
                return 0
            delta = self._pending[user] = state.empty()
        state.add(facts, weight, e.timestamp)
        delta.add(facts, weight, e.timestamp)
        self._cache.put(user, state.profile(user, now))
        return 1

    def facts(self, doc_ids: set[str]) -> dict[str, ProductFacts | None]:
        """Brand and price of products (None: not in the catalogue), the misses read in one
        catalogue search; the last MAX_FACTS looked up are kept."""
        with self._lock:
            known = {d: self._facts[d] for d in doc_ids if d in self._facts}
        missing = doc_ids - set(known)
        if missing:
            s = self._app.settings
            found = product_facts(self._app.engine, s.index, missing)
            with self._lock:
                for d in missing:
                    known[d] = self._facts[d] = found.get(d)
                while len(self._facts) > self._max_facts:
                    self._facts.popitem(last=False)
        return known

    @property
    def pending(self) -> int:
        """Shoppers whose changes are not stored yet (a write under way included)."""
        with self._lock:
            return len(self._pending) + len(self._writing[1])

    def store_pending(self, now: float) -> int:
        """Write every shopper's unwritten actions: their stored state (one realtime _mget)
        plus the delta, in one bulk; returns how many profiles. On failure the deltas go
        back to be tried again with the next write, and the error is raised."""
        with self._lock:
            batch, self._pending = self._pending, {}
            self._writing = (now, batch)
        if not batch:
            return 0
        s = self._app.settings
        engine = self._app.engine
        try:
            stored = engine.get_documents(s.profiles_index, list(batch))
            merged = [_with(Profile.from_dict(stored[u]) if u in stored else None, delta, u, now)
                      for u, delta in batch.items()]
            save_profiles(engine, merged, s.profiles_index, refresh=False)
        except Exception:
            with self._lock:
                for user, delta in batch.items():
                    newer = self._pending.get(user)
                    if newer is not None:
                        delta.merge(newer)
                    self._pending[user] = delta
                self._writing = (0.0, {})
            raise
        with self._lock:  # what the store now holds, plus what arrived during the write
            self._writing = (0.0, {})
            for p in merged:
                newer = self._pending.get(p.user_id)
                self._cache.put(p.user_id, p if newer is None else
                                _with(p, newer, p.user_id, now))
        return len(merged)


def _with(base: Profile | None, delta: ProfileState, user_id: str, now: float) -> Profile:
    """`base`'s state (none, or one stored without a state: empty) plus `delta`."""
    state = base.state.copy() if base is not None and base.state is not None else delta.empty()
    state.merge(delta)
    return state.profile(user_id, now)
