"""Host tasks: ``host.disk`` (space and inodes), ``host.health`` (disk, memory, CPU, services, clock),
``host.process`` (memory of named processes, leak detection)."""
