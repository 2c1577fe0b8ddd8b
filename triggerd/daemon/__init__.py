"""The daemon: builds functions, triggers and the listen address from a config, runs them,
drains them on SIGTERM (`app`), reloads what changed on SIGHUP and pauses/resumes one
trigger (`reload`, with the config comparison in `changes` and the in-flight count of a
replaced backend in `inflight`), talks to systemd (`systemd`) and sets the garbage collector
for a process holding many short-lived records (`gctune`).

May import every core layer except `cli`; never a connector."""
