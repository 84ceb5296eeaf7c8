"""The example configuration in docs/security.md is valid: it loads and every job resolves."""

from __future__ import annotations

import re
from pathlib import Path

from upkeeper.core.jobs import load_setup

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def test_security_doc_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'h.db'}\n" + blocks[0])
    setup = load_setup(cfg)
    assert {"security-audit", "tls-check", "dns-check", "deps", "compliance-report"} <= set(setup.jobs)
    assert setup.jobs["deps"].options.sla.critical.total_seconds() == 86400  # type: ignore[attr-defined]
