"""Services mode: desired state -> reconcile -> workers; readiness, output, shutdown."""
