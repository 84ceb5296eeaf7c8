"""Security audit tasks: one module per check family, each also part of ``security.audit``.

Every check returns :class:`~upkeeper.core.task.Finding` objects with a severity,
the evidence (``value``/``data``) and a remediation.  One failing check never
stops the others (see :func:`upkeeper.tasks.security._common.guarded`).
"""
