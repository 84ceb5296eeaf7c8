"""PostgreSQL tasks: one module per task, SQL as named constants beside each."""
