"""The state store: checkpoints, the durable async queue, the DLQ index (`base` is the
interface, `sqlite` the embedded store, `factory` picks one from the `state` setting).

Imports only `triggerd.types`."""

#: Names the store's writers and its read-only readers (`triggerd status`) share, kept here so
#: that a reader gets them without importing the store's modules (their dataclasses cost a
#: command's start-up a few milliseconds).

#: The SQLite path of a store kept in memory (`sqlite://:memory:`).
MEMORY_PATH = ":memory:"
#: Checkpoint scope of `triggerd dlq replay`'s markers: key = DLQ entry id, value = JSON of
#: the replay.
REPLAYED_SCOPE = "triggerd:dlq-replayed"
