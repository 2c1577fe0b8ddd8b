"""The delivery path, from a source's records to their acknowledgement:

- `pipeline`: the poll pipeline (event-source-mapping rules: batches, ordering keys,
  partial batch responses, retry in place, bisect);
- `asyncpath`: the asynchronous path of push sources (durable queue, Lambda's async retries,
  maximum event age);
- `batching`, `results`, `retry`: batch building, judging a result against its batch, backoff;
- `failures`, `onfailure`, `destinations`: the records AWS writes on failure, routing them to a
  trigger's destination, and the built-in `file` destination;
- `streams`: the shard log stream sources share (read-ahead, settlement in any order,
  checkpoints at the settled prefix);
- `ready`: a helper for push sources that hand out records as they become ready.

Invokes functions only through the `Backend` protocol of `triggerd.types`; never imports
`functions`, `http`, `daemon` or `cli`."""
