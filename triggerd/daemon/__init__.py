"""The daemon: builds functions, triggers and the listen address from a config, runs them,
drains them on SIGTERM (`app`), and talks to systemd (`systemd`).

May import every core layer except `cli`; never a connector."""
