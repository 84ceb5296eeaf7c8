"""Log analysis: nginx access and error logs, application logs, PostgreSQL logs.

Parsers and aggregators live here; the tasks in :mod:`upkeeper.tasks.logs` wire
them to targets, history and reports.  This package imports nothing heavy at
module level: the access-log scanner runs in spawned worker processes, which
should start fast.
"""
