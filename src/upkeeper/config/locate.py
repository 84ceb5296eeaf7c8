"""Which config file a command reads — light (``os``, ``pathlib``): ``upkeeper run`` asks before it imports the
config models (see :func:`upkeeper.core.worker.start_ahead`); :func:`upkeeper.config.loader.find_config` says what
is wrong when there is none."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "UPKEEPER_CONFIG"
DEFAULT_LOCATIONS = (Path("upkeeper.yaml"), Path("/etc/upkeeper/upkeeper.yaml"))


def locate_config(explicit: str | Path | None) -> tuple[Path | None, str]:
    """The config file to use (``--config``, else ``$UPKEEPER_CONFIG``, else the first of
    :data:`DEFAULT_LOCATIONS` that exists) and where it was named ("option", "env", "default"); None for the path
    when the one named does not exist, or none of the default ones does."""
    if explicit:
        p = Path(explicit).expanduser()
        return (p if p.exists() else None), "option"
    env = os.environ.get(CONFIG_ENV)
    if env:
        p = Path(env).expanduser()
        return (p if p.exists() else None), "env"
    return next((p for p in DEFAULT_LOCATIONS if p.exists()), None), "default"
