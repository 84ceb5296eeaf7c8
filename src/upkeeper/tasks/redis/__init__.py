"""Redis tasks: ``redis.check`` (health), ``redis.evict`` (expendable keys), ``redis.metrics`` (samples)."""
