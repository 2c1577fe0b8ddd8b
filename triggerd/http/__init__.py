"""The daemon's listen address: the route table (`routes`), the aiohttp server with /healthz
and /metrics (`server`), and Lambda's Invoke API (`invoke_api`).

Depends on the small `host.HttpHost` interface (functions, Event queues, route table), not on
the daemon; may import `delivery`, `functions` and the layers below them."""
