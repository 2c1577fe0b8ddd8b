"""The `triggerd` command line (`main`): run, validate, schema, invoke, generate-event, dlq,
status. The top layer: may import every other part of the core."""
