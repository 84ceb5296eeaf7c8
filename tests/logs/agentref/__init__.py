"""A frozen copy of the user-agent part of upkeeper.logs.classify as it was before the user-agent speed work
(commit cf01303).

Test-only: tests/logs/test_agents_equivalence.py checks that the optimized :func:`is_bot` and :func:`scanner_name`
give the same answers as these.  Do not change it except to follow a deliberate change of answers (and say so).
"""
