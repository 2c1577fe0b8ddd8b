"""The state store: checkpoints, the durable async queue, the DLQ index (`base` is the
interface, `sqlite` the embedded store, `factory` picks one from the `state` setting).

Imports only `triggerd.types`."""
