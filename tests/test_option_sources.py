"""Every documented option names the source of its default (issues 3 and 7).

The task reference and the config reference print each field's description; that description
must end with "Source: …" (an anchor tool or standard, "upkeeper default", or that the option is
not set by default / required).
"""

from __future__ import annotations

from pydantic import BaseModel

from upkeeper import docsgen
from upkeeper.config.models import Config, DaemonSettings, Defaults, JobConfig
from upkeeper.config.storage import LocalStorageConfig, S3StorageConfig, SftpStorageConfig
from upkeeper.config.targets import (
    AppTarget,
    HostTarget,
    HttpTarget,
    NginxTarget,
    PostgresTarget,
    RedisTarget,
)
from upkeeper.core.task import REGISTRY

CONFIG_MODELS: tuple[type[BaseModel], ...] = (
    Config, Defaults, DaemonSettings, JobConfig,
    PostgresTarget, RedisTarget, NginxTarget, HostTarget, AppTarget, HttpTarget,
    LocalStorageConfig, S3StorageConfig, SftpStorageConfig,
    *(model for _, _, model in docsgen.EXTRA_SECTIONS),
)


def documented_models() -> list[type[BaseModel]]:
    """Every task's Options and the config models, with the nested models docsgen documents."""
    seen: list[type[BaseModel]] = []

    def add(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for _, sub in docsgen.nested_models(model):
            add(sub)

    for cls in REGISTRY:
        add(cls.Options)
    for model in CONFIG_MODELS:
        add(model)
    return seen


def test_the_walk_covers_tasks_nested_models_and_config() -> None:
    names = {m.__name__ for m in documented_models()}
    assert len(list(REGISTRY)) > 10
    # nested entries (retention, service checks, processes) and config sections are included
    assert {"RetentionPolicy", "ServiceCheck", "ProcessSelector", "Config", "JobConfig", "S3StorageConfig"} <= names


def test_every_option_names_the_source_of_its_default() -> None:
    offenders = sorted(
        f"{model.__module__}.{model.__qualname__}.{name}"
        for model in documented_models()
        for name, field in model.model_fields.items()
        if "Source:" not in (field.description or "")
    )
    assert not offenders, (
        f"{len(offenders)} option(s) without 'Source: …' in their description (name the anchor the default "
        "comes from, else 'upkeeper default' / 'upkeeper (not set by default)'), then run 'make docs':\n  "
        + "\n  ".join(offenders)
    )


def test_generated_references_show_a_source_on_every_option_row() -> None:
    for text in (docsgen.tasks_markdown(), docsgen.config_markdown()):
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        missing = [row for row in rows if "Source:" not in row]
        assert rows
        assert not missing, "option rows without a source:\n" + "\n".join(missing)
