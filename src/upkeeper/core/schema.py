"""JSON Schema of the config file, with every task's options (for editor completion)."""

from __future__ import annotations

from typing import Any

from upkeeper.config.models import Config
from upkeeper.core.task import REGISTRY

SCHEMA_ID = "https://upkeeper.dev/schema/upkeeper.json"


def config_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "upkeeper configuration"
    # top-level x-… keys are ignored (a place for YAML anchors; see the config loader)
    schema["patternProperties"] = {"^x-.": {}}
    defs = schema.setdefault("$defs", {})
    job = defs.get("JobConfig")
    if job is None:
        return schema
    job["properties"]["task"]["enum"] = REGISTRY.names()
    branches = []
    for cls in REGISTRY:
        opt = cls.Options.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
        for name, d in opt.pop("$defs", {}).items():
            defs.setdefault(name, d)
        ref_name = "Options_" + cls.name.replace(".", "_")
        defs[ref_name] = opt
        branches.append(
            {
                "if": {"properties": {"task": {"const": cls.name}}, "required": ["task"]},
                "then": {"properties": {"options": {"$ref": f"#/$defs/{ref_name}"}}},
            }
        )
    job["allOf"] = branches
    return schema
