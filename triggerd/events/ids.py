"""Request ids in Lambda's format (random version 4 UUIDs), drawn from a generator its owner
keeps, without a system call per id: `uuid.uuid4()` reads `os.urandom` and builds a `UUID`
object, which costs more than the rest of an Invoke API `Event` call's own work."""

from __future__ import annotations

import random

__all__ = ["random_uuid"]

#: The version (4) and variant (RFC 4122) bits of a random UUID.
_UUID4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_BITS = (4 << 76) | (2 << 62)


def random_uuid(rng: random.Random) -> str:
    """A random (version 4) UUID as text, drawn from `rng` (seed it from `os.urandom`: ids
    need to be unique, not secret), formatted directly."""
    h = f"{rng.getrandbits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
