"""Structured logs (JSON lines or text, secrets masked) and Prometheus metrics.

Imports only `triggerd.events` and `triggerd.types`."""
