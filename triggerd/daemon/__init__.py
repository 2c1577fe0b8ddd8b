"""The daemon: builds functions, triggers and the listen address from a config, runs them,
drains them on SIGTERM (`app`), talks to systemd (`systemd`) and sets the garbage collector
for a process holding many short-lived records (`gctune`).

May import every core layer except `cli`; never a connector."""
