"""Single-command mode: one COMMAND, as tini and dumb-init run it."""
