"""Request ids drawn from a seeded generator are random version 4 UUIDs in the text form
`str(uuid.uuid4())` gives, and distinct."""

from __future__ import annotations

import os
import random
import uuid

from triggerd.events.ids import random_uuid


def test_request_ids_are_version_4_uuids_in_canonical_text_and_distinct() -> None:
    rng = random.Random(os.urandom(32))
    ids = [random_uuid(rng) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:500]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_every_random_bit_but_the_version_and_variant_reaches_the_id() -> None:
    # All-zero and all-one draws: only the version and variant bits are forced.
    class Fixed(random.Random):
        def __init__(self, value: int) -> None:
            super().__init__(0)
            self.value = value

        def getrandbits(self, k: int) -> int:
            return self.value & ((1 << k) - 1)

    assert random_uuid(Fixed(0)) == "00000000-0000-4000-8000-000000000000"
    assert random_uuid(Fixed(-1)) == "ffffffff-ffff-4fff-bfff-ffffffffffff"
