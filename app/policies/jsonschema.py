"""The published JSON Schemas of the policy files, generated from the pydantic models.

They are shipped in ``policies/schema/`` so that an editor (or a partner's CI) can validate a
protocol before it reaches Accord; a test keeps the shipped files equal to what the models
generate, so the schema a DPO reads is the one the loader enforces.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.policies.schema import KmisaSettings, Protocol, Taxonomy

_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: File name in ``policies/schema/`` for each model.
SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "taxonomy.schema.json": Taxonomy,
    "kmisa.schema.json": KmisaSettings,
    "protocol.schema.json": Protocol,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The validation schema of ``model`` with the dialect stated, as editors expect."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": _DIALECT, **schema}


def render_json_schema(model: type[BaseModel]) -> str:
    """The exact text shipped for ``model``: stable key order, two-space indent, final newline."""
    return json.dumps(json_schema(model), indent=2, ensure_ascii=False) + "\n"


def write_json_schemas(directory: Path) -> list[Path]:
    """Write every policy schema into ``directory`` and return the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMA_FILES.items():
        path = directory / name
        path.write_text(render_json_schema(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a developer's convenience
    from app.policies.loader import repository_policies_root

    for written_path in write_json_schemas(repository_policies_root() / "schema"):
        print(written_path)
