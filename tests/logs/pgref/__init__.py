"""A frozen copy of upkeeper.logs.pglog and sqlfp as they were before the speed work (commit 0a6635e).

Test-only: tests/logs/test_pglog_equivalence.py checks that the optimized modules give the same
results as these.  Do not change them except to follow a deliberate change of results (and say so).
"""
