"""EventBridge-compatible event buses: PutEvents's entry validation and per-entry results
(`entries`), and the buses that match each event against their rules and queue one
invocation per matching target before PutEvents answers (`buses`). The buses, rules and
targets are declared in config (`triggerd.config.buses`); docs/eventbridge.md."""
