"""A hint, never a setting: the ``olddir`` logrotate's configuration gives for a log.

Used only to word the ``lost_lines`` finding ("logrotate moves this log's rotated files to …: add it to
rotated_dirs"); nothing is read from a directory found here.  The parser is deliberately small: the
top-level ``olddir`` of ``/etc/logrotate.conf``, and the stanzas (``path [path…] { … }``) of it and of
the files in ``/etc/logrotate.d`` and of the files and directories they ``include`` (followed where it stands,
each file once, bounded), whose paths (globs allowed, quotes removed) name the log.  ``tabooext`` and the like
are not followed (the usual backup suffixes are skipped); when reading fails, the hint says so.
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


#: how deep ``include`` is followed, and how many files are read at most (a hint: never a long walk)
MAX_INCLUDE_DEPTH = 8
MAX_FILES = 500


def olddir_for(log: str, configs: tuple[str, ...] | None = None) -> OlddirHint:
    """The ``olddir`` logrotate's configuration gives ``log`` (relative ones made absolute as logrotate does:
    relative to the log's directory).  ``configs``: the files and directories to read (default
    :data:`CONFIGS`); an ``include`` of a file or directory is followed where it stands, as logrotate does
    (each file read once, :data:`MAX_INCLUDE_DEPTH` deep, :data:`MAX_FILES` in all)."""
    roots = CONFIGS if configs is None else configs
    files, problems = _files(roots)
    seen: set[str] = set()
    default: list[str | None] = [None]

    def scan(f: Path, depth: int) -> OlddirHint | None:
        key = os.path.realpath(f)
        if key in seen:
            return None  # read already (an include loop, or a root that another one includes)
        if len(seen) >= MAX_FILES:
            problems.append(f"{f}: not read (more than {MAX_FILES} files)")
            return None
        seen.add(key)
        try:
            text = f.read_text(errors="replace")
        except OSError as exc:
            problems.append(f"{f}: {exc.strerror or exc}")
            return None
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
                        found = olddir if olddir is not None else default[0]
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
            if parts[0] == "include" and len(parts) == 2:
                if depth >= MAX_INCLUDE_DEPTH:
                    problems.append(f"{f}: include {parts[1]} not followed (more than {MAX_INCLUDE_DEPTH} deep)")
                    continue
                target = _word(parts[1])
                included, why = _files((target,))
                problems.extend(why or ([] if Path(target).exists() else [f"{f}: include {target}: no such file"]))
                for g in included:
                    got = scan(g, depth + 1)
                    if got is not None:
                        return got
            elif parts[0] == "olddir" and len(parts) == 2 and f.name == "logrotate.conf":
                default[0] = _word(parts[1])
            elif parts[0] == "noolddir" and f.name == "logrotate.conf":
                default[0] = None
            elif parts[0].startswith(("/", '"', "'", "~")):
                words += _split(line)
        return None

    for f in files:
        got = scan(f, 0)
        if got is not None:
            return got
    return OlddirHint(None, ", ".join(roots), "; ".join(problems))


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
