"""Application tasks: ``app.maintenance`` (weekly) and ``app.cleanup`` (daily)."""
