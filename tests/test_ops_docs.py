"""The Redis, host and app pages' examples are valid configs; the Redis one runs against a real server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from upkeeper.config.loader import load_text
from upkeeper.core.jobs import build_setup
from upkeeper.sandbox.redis import RedisServer

DOCS = Path(__file__).resolve().parents[1] / "docs"


def yaml_blocks(page: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.S)


@pytest.mark.parametrize("page", ["redis.md", "host.md", "app.md"])
def test_examples_are_valid_configs(page: str) -> None:
    blocks = yaml_blocks(page)
    assert blocks, f"{page} has no yaml example"
    for text in blocks:
        setup = build_setup(load_text(text, file=page))
        assert setup.jobs


def test_redis_example_runs(redis_clean: RedisServer, tmp_path: Path, cli: Any) -> None:
    text = yaml_blocks("redis.md")[0].replace("port: 6379", f"port: {redis_clean.port}")
    config = tmp_path / "upkeeper.yaml"
    config.write_text(f"history: {tmp_path / 'history.db'}\n" + text)
    redis_clean.client().set("cache:x", 1)
    res = cli(["--config", config, "run", "cache-check", "cache-evict", "--json", "-p", "1"])
    runs = {r["job"]: r for r in res.json()}
    assert runs["cache-evict"]["status"] == "ok"
    # the example expects a replica that the test server does not have: said loudly
    assert any(f["check"] == "redis.replicas_missing" for f in runs["cache-check"]["findings"])
    assert res.code == 1


def test_every_redis_finding_is_in_the_redis_page() -> None:
    """docs/redis.md's table of checks left out redis.replicas_missing (the example's own expected_replicas),
    redis.replica_syncing and redis.bgsave_slow."""
    from upkeeper.core.task import REGISTRY

    src = Path(__file__).resolve().parents[1] / "src" / "upkeeper" / "tasks" / "redis"
    ids = set()
    for f in src.glob("*.py"):
        ids |= set(re.findall(r'(?:_f|Finding)\(\s*"(redis\.[a-z_]+)"', f.read_text()))
    assert {"redis.memory", "redis.replicas_missing", "redis.evict_insufficient"} <= ids  # the pattern finds them
    page = (DOCS / "redis.md").read_text()
    missing = sorted(i for i in ids if f"`{i}`" not in page and i not in REGISTRY.names())
    assert not missing, f"findings not described in docs/redis.md: {missing}"
