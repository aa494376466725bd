"""Operating the agent as a service: supervisor, systemd notify and watchdog, status, metrics, retention, logs."""
