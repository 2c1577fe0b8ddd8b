"""AWS's fan-out services served by triggerd on the control listener, each delivering through
the functions' durable queues of asynchronous invocations:

- `triggerd.fanout.sns`: SNS-compatible topics (Publish fans out to subscribed functions);
- `triggerd.fanout.events`: EventBridge-compatible event buses (PutEvents, rules with event
  patterns, targets with input transformation).

The HTTP side (`triggerd.http`) authenticates the calls and hands them to these packages;
nothing here imports it."""
