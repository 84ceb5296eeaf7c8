"""Log analysis tasks: ``logs.nginx`` (access logs), ``logs.errors`` (nginx error log and
application logs) and ``logs.postgres`` (PostgreSQL server logs).

Parsers and aggregators live in :mod:`upkeeper.logs`; these modules wire them to
targets, incremental state, history (metrics and trends), findings and reports.
"""
