"""Policies as code: the files in ``policies/``, their schema, validation and hashing."""
from app.policies.jsonschema import write_json_schemas
from app.policies.loader import (
    LoadedProtocol,
    PolicyBundle,
    PolicyError,
    PolicyProblem,
    bundle_from_sources,
    check_policies,
    check_sources,
    collect_sources,
    load_bundle,
    repository_policies_root,
)

__all__ = [
    "LoadedProtocol",
    "PolicyBundle",
    "PolicyError",
    "PolicyProblem",
    "bundle_from_sources",
    "check_policies",
    "check_sources",
    "collect_sources",
    "load_bundle",
    "repository_policies_root",
    "write_json_schemas",
]
