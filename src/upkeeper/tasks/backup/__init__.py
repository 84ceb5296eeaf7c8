"""Backup tasks: postgres.backup, files.backup, redis.backup and backup.verify (one module each).

The pipeline, manifests, catalog and retention live in :mod:`upkeeper.backup`; these modules wire a
target's data source into them.
"""
