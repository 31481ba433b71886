"""Leases in the engine (esrank.engine.lease), as both engines hold them."""

from __future__ import annotations

import time
import uuid

import pytest

from esrank.engine.lease import LEASES_INDEX, Lease, LeaseHeldError, LeaseLostError


@pytest.fixture()
def name(engine):
    lease = f"test:{uuid.uuid4().hex[:8]}"
    yield lease
    found = engine.get_document(LEASES_INDEX, lease)
    if found is not None:
        engine.delete_document(LEASES_INDEX, lease, found[1])


def test_a_lease_is_exclusive_renewed_and_released(engine, name):
    with Lease(engine, name, "first", ttl=0.8) as lease:
        with pytest.raises(LeaseHeldError, match="held by first"):
            Lease(engine, name, "second").__enter__()
        expires = engine.get_document(LEASES_INDEX, name)[0]["expires"]
        time.sleep(1.2)  # longer than the ttl: renewals keep it
        lease.check()
        assert engine.get_document(LEASES_INDEX, name)[0]["expires"] > expires
    assert engine.get_document(LEASES_INDEX, name) is None
    with Lease(engine, name, "second"):  # free again
        pass


def test_a_lease_taken_over_is_lost_and_left_to_its_new_holder(engine, name):
    with Lease(engine, name, "first", ttl=0.4) as lease:
        source, version = engine.get_document(LEASES_INDEX, name)
        engine.put_document(LEASES_INDEX, name, {**source, "owner": "thief:1"}, version,
                            visible=False)
        time.sleep(0.3)  # a renewal finds the version changed
        with pytest.raises(LeaseLostError, match="another run took it over"):
            lease.check()
    assert engine.get_document(LEASES_INDEX, name)[0]["owner"] == "thief:1"
