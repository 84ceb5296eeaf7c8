"""A hint, never a setting: the ``olddir`` logrotate's configuration gives for a log.

Used only to word the ``lost_lines`` finding ("logrotate moves this log's rotated files to …: add it to
rotated_dirs"); nothing is read from a directory found here.  The parser is deliberately small: the
top-level ``olddir`` of ``/etc/logrotate.conf``, and the stanzas (``path [path…] { … }``) of it and of
the files in ``/etc/logrotate.d``, whose paths (globs allowed, quotes removed) name the log.  ``include``
of other places, ``tabooext`` and the like are not followed; when reading fails, the hint says so.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

#: where logrotate's configuration is looked for (Debian's and Red Hat's places)
CONFIGS: tuple[str, ...] = ("/etc/logrotate.conf", "/etc/logrotate.d")


@dataclass(frozen=True)
class OlddirHint:
    olddir: str | None  # the directory (absolute), None when no stanza naming the log sets one
    source: str  # the config file that says so, or what was checked
    problem: str = ""  # why the configuration could not be (fully) read


def _files(configs: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    out: list[Path] = []
    problems: list[str] = []
    for c in configs:
        p = Path(c)
        try:
            if p.is_dir():
                out += sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                              and not q.name.endswith(("~", ".dpkg-old", ".dpkg-dist", ".rpmsave", ".rpmnew")))
            elif p.exists():
                out.append(p)
        except OSError as exc:
            problems.append(f"{c}: {exc.strerror or exc}")
    return out, problems


def olddir_for(log: str, configs: tuple[str, ...] | None = None) -> OlddirHint:
    """The ``olddir`` logrotate's configuration gives ``log`` (relative ones made absolute as logrotate does:
    relative to the log's directory)."""
    files, problems = _files(CONFIGS if configs is None else configs)
    default: str | None = None
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError as exc:
            problems.append(f"{f}: {exc.strerror or exc}")
            continue
        words: list[str] = []  # the paths of the stanza being opened
        inside: list[str] | None = None
        olddir: str | None = None
        script = False
        pending = [raw.split("#", 1)[0].strip() for raw in text.splitlines()]
        pending.reverse()
        while pending:
            line = pending.pop()
            if not line:
                continue
            if script:
                script = line != "endscript"
                continue
            if inside is not None:
                if line.startswith("}"):
                    if any(fnmatch.fnmatchcase(log, pat) for pat in inside):
                        found = olddir if olddir is not None else default
                        if found and found.lower() != "noolddir":
                            return OlddirHint(_absolute(log, found), str(f), "; ".join(problems))
                        return OlddirHint(None, str(f), "; ".join(problems))
                    inside, olddir = None, None
                    continue
                parts = line.split(None, 1)
                if parts[0] in ("postrotate", "prerotate", "firstaction", "lastaction", "preremove"):
                    script = True
                elif parts[0] == "olddir" and len(parts) == 2:
                    olddir = _word(parts[1])
                elif parts[0] == "noolddir":
                    olddir = "noolddir"
                continue
            if "{" in line:
                head, rest = line.split("{", 1)
                words += _split(head)
                inside, words = words, []
                pending.append(rest.strip())  # "path { daily" : what follows the brace is a directive
                continue
            parts = line.split(None, 1)
            if parts[0] == "olddir" and len(parts) == 2 and f.name == "logrotate.conf":
                default = _word(parts[1])
            elif parts[0] == "noolddir" and f.name == "logrotate.conf":
                default = None
            elif parts[0].startswith(("/", '"', "'", "~")):
                words += _split(line)
    checked = ", ".join(CONFIGS if configs is None else configs)
    return OlddirHint(None, checked, "; ".join(problems))


def _split(text: str) -> list[str]:
    try:
        return [os.path.expanduser(w) for w in shlex.split(text)]
    except ValueError:
        return text.split()


def _word(text: str) -> str:
    got = _split(text)
    return got[0] if got else text.strip()


def _absolute(log: str, olddir: str) -> str:
    d = Path(os.path.expanduser(olddir))
    return str(d if d.is_absolute() else Path(log).parent / d)
