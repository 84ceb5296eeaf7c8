"""Which host, and which of its PID namespaces, a process runs in: the host part of the identities that
history locks and runs (:func:`upkeeper.core.history.process_identity`) and backup leases
(:mod:`upkeeper.backup.lease`) name their owner by.  A module of its own: the leases must not import the history's
SQLAlchemy."""

from __future__ import annotations

import functools
import os
import socket

#: the initial PID namespace's (PROC_PID_INIT_INO, fixed by the kernel): a process outside a container's
_INIT_PID_NS = "pid:[4026531836]"


@functools.cache
def host_label() -> str:
    """The host part of this process's identity: the host name, followed by ``@pidns<inode>`` for a process in
    a PID namespace of its own (a container sharing the host's name: ``docker run --network host``, a pod's
    containers).  Its PIDs mean nothing outside that namespace, nor the host's inside it: without the label a
    daemon in such a container and an ``upkeeper run`` on the host took each other's live runs for dead at once
    (a PID that is gone, or another process's) -- runs marked interrupted, locks taken over, the job run twice.
    A process of the initial namespace (outside any container) is named by its host name alone, as before."""
    label = socket.gethostname()
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux, or /proc not mounted: the host name alone, as before
        ns = _INIT_PID_NS
    if ns != _INIT_PID_NS:
        label += "@pidns" + ns.removeprefix("pid:[").removesuffix("]")
    return label
