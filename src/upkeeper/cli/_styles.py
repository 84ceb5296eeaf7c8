"""The CLI's style names (what ``status_text`` may colour), without importing Rich."""

from __future__ import annotations

#: Rich styles of the CLI's theme (:data:`upkeeper.cli._console.THEME`)
STYLES: dict[str, str] = {
    "ok": "green",
    "warn": "yellow",
    "fail": "bold red",
    "error": "bold red",
    "skipped": "dim",
    "interrupted": "magenta",
    "stopped": "dim magenta",  # interrupted because upkeeper was asked to stop: no failure
    "running": "cyan",
    "queued": "cyan",
    "pending": "blue",
    "critical": "bold red",
    "warning": "yellow",
    "info": "dim",
}
