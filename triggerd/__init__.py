"""triggerd: AWS Lambda's event-source machinery for any infrastructure.

The core, one folder per role, from the bottom layer up (each imports only the layers below
it; `lint-imports` checks this and that the core never imports a connector):

- `types`: the contracts shared by the core, connectors and backends (records, sources,
  backends, destinations, errors, plugin descriptors);
- `events`: the event vocabulary: Lambda filter patterns, AWS timestamps;
- `state`, `telemetry`: the state store (checkpoints, durable async queue, DLQ index); logs and
  metrics;
- `config`: the config file, its models and the entry-point plugin registry;
- `delivery`, `functions`: the path from a source's records to an acknowledgement (batching,
  filtering, invoking, judging results, retries, on-failure destinations); and the function
  side (backends, the Lambda Runtime API, the bundled runtime client);
- `http`: the listen address (route table, /healthz, /metrics, the Invoke API);
- `daemon`: assembles all of it from a config and runs it under systemd;
- `cli`: the `triggerd` command.

Connectors (one external system each) live beside the core as `triggerd_<system>` packages and
register through the entry-point groups `triggerd.sources`, `triggerd.destinations` and
`triggerd.backends`.
"""

__version__ = "0.1.0"
