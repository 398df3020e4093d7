"""The policy file format: its published schemas, its errors, its hashes and the legal code lists.

A DPO edits these files by hand, so a mistake must come back as the file, the line and the
field to fix; and the JSON Schemas shipped for editors must be exactly what the loader enforces.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pytest
import yaml

from app.policies import (
    PolicyError,
    bundle_from_sources,
    check_sources,
    collect_sources,
    load_bundle,
    repository_policies_root,
    write_json_schemas,
)
from app.policies.jsonschema import SCHEMA_FILES, render_json_schema
from app.policies.schema import category_lineage, effective_category_flags

ROOT = repository_policies_root()
SOURCES = collect_sources(ROOT)
VCS_V2 = "protocols/vcs-group/vcs-safeguarding-v2.yaml"


def edited(path: str, old: str, new: str, sources: Mapping[str, bytes] = SOURCES) -> dict[str, bytes]:
    text = sources[path].decode()
    assert old in text, old
    return {**sources, path: text.replace(old, new, 1).encode()}


def line_of(sources: Mapping[str, bytes], path: str, line: int) -> str:
    return sources[path].decode().splitlines()[line - 1].strip()


# --- the published schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_shipped_schema_is_what_the_models_generate(name: str) -> None:
    shipped = (ROOT / "schema" / name).read_text(encoding="utf-8")
    assert shipped == render_json_schema(SCHEMA_FILES[name]), (
        f"policies/schema/{name} is stale: run `python -m app.policies.jsonschema`")


def test_write_json_schemas_writes_every_schema(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(SCHEMA_FILES)
    for path in written:
        assert path.read_text(encoding="utf-8") == (ROOT / "schema" / path.name).read_text(encoding="utf-8")


def test_shipped_files_validate_against_the_published_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schemas = {name: json.loads((ROOT / "schema" / name).read_text()) for name in SCHEMA_FILES}
    for path, raw in SOURCES.items():
        name = "protocol.schema.json" if path.startswith("protocols/") else path.replace(".yaml", ".schema.json")
        # JSON has no dates or integer keys: write them as editors see them.
        document = json.loads(json.dumps(yaml.safe_load(raw), default=str))
        jsonschema.validate(document, schemas[name], cls=jsonschema.Draft202012Validator)


# --- errors name the file, the line and the field -----------------------------------------


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("version: 2\n", 'version: "2"\n', "version", "valid integer"),
    ("version: 2\n", "version: true\n", "version", "valid integer"),
    ("    max_retention_months: 24\n", "    max_retention_months: 24.5\n", "parties.0.max_retention_months",
     "valid integer"),
    ("  covers_bulk: false\n", "  covers_bulk: 0\n", "dpia.covers_bulk", "valid boolean"),
    ("  completed_on: 2025-02-14\n", "  completed_on: 20250214\n", "dpia.completed_on", "YYYY-MM-DD"),
    ("    tier: personal\n", "    tier: everything\n", "parties.0.tier", "'personal' or 'depersonalised'"),
    ("    roles: [provider, recipient]\n", "    roles: provider\n", "parties.0.roles", "tuple"),
])
def test_changed_field_type_names_file_line_and_field(old: str, new: str, field: str, words: str) -> None:
    sources = edited(VCS_V2, old, new)
    [problem] = check_sources(sources)
    assert (problem.file, problem.field) == (VCS_V2, field)
    assert line_of(sources, VCS_V2, problem.line) == new.strip()
    assert words in problem.message


def test_kmisa_boolean_where_a_number_belongs() -> None:
    sources = edited("kmisa.yaml", "grace_period_days: 90", "grace_period_days: yes")
    [problem] = check_sources(sources)
    assert (problem.file, problem.field) == ("kmisa.yaml", "grace_period_days")
    assert line_of(sources, "kmisa.yaml", problem.line) == "grace_period_days: yes"


def test_unquoted_version_label_is_explained() -> None:
    sources = edited("kmisa.yaml", 'label: "2024"', "label: 2024")
    [problem] = check_sources(sources)
    assert problem.field == "versions.2.label" and "in quotes" in problem.message


def test_unknown_field_is_named() -> None:
    sources = edited(VCS_V2, "    max_retention_months: 24\n", "    max_retention_months: 24\n    retention: 24\n")
    [problem] = check_sources(sources)
    assert problem.field == "parties.0.retention"
    assert "not a field here" in problem.message
    assert line_of(sources, VCS_V2, problem.line) == "retention: 24"


def test_missing_field_points_at_its_parent() -> None:
    sources = edited(VCS_V2, "  reference: KP-DPIA-2025-031\n", "")
    [problem] = check_sources(sources)
    assert problem.field == "dpia.reference" and "missing" in problem.message
    assert line_of(sources, VCS_V2, problem.line) == "dpia:"


def test_duplicate_key_is_refused() -> None:
    sources = edited(VCS_V2, "review_on: 2027-03-31\n", "review_on: 2027-03-31\nreview_on: 2028-03-31\n")
    [problem] = check_sources(sources)
    assert "appears twice" in problem.message
    assert line_of(sources, VCS_V2, problem.line) == "review_on: 2028-03-31"


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("subject_types: [child,", "subject_types: [kid,", "subject_types.0", "not a subject type"),
    ("    lawful_bases: [e]\n", "    lawful_bases: [g]\n", "parties.0.lawful_bases.0", "Art 6(1) basis"),
    ("{article9: g, schedule1_paragraph: 18}", "{article9: g, schedule1_paragraph: 2}",
     "parties.0.special_category_conditions.0.schedule1_paragraph", "cannot be used with Art 9(2)(g)"),
    ("{article9: h, schedule1_paragraph: 2}", "{article9: h}",
     "parties.3.special_category_conditions.1.schedule1_paragraph", "needs a DPA 2018 Schedule 1 Part 1"),
    ("{official_authority: true, schedule1_paragraphs: [10]}", "{official_authority: true, schedule1_paragraphs: [5]}",
     "parties.0.criminal_offence.schedule1_paragraphs.0", "not a Schedule 1 condition"),
    ("transfer_methods: [accord_transfer,", "transfer_methods: [unencrypted_email,", "transfer_methods.0",
     "insecure"),
    ("  depersonalised: [statistics.safeguarding]", "  depersonalised: [health]", "data_categories.depersonalised.0",
     "identifies people"),
    ("limited_to_categories: [identity, contact,", "limited_to_categories: [employment, contact,",
     "parties.4.limited_to_categories.0", "can only narrow"),
    ("supersedes: 1", "supersedes: 2", "supersedes", "earlier version"),
    ("subgroup: vcs-group", "subgroup: ocg-group", "subgroup", "folder"),
    ("code: vcs-safeguarding", "code: vcs-protection", "code", "rename the file"),
    ("    max_retention_months: 12\n", "", "parties.4.max_retention_months", "maximum retention"),
])
def test_cross_file_problems_name_file_line_and_field(old: str, new: str, field: str, words: str) -> None:
    sources = edited(VCS_V2, old, new)
    problems = [p for p in check_sources(sources) if p.file == VCS_V2]
    # A subgroup change is reported twice: against the folder and against version 1.
    assert {p.field for p in problems} == {field}, problems
    assert words in problems[0].message
    assert problems[0].line is not None


def test_taxonomy_child_cannot_unset_an_inherited_flag() -> None:
    sources = edited("taxonomy.yaml", "  health.mental_health:\n    label: Mental health\n",
                     "  health.mental_health:\n    label: Mental health\n    special_category: false\n")
    [problem] = check_sources(sources)
    assert problem.field == "data_categories.health.mental_health.special_category"
    assert "children inherit" in problem.message


def test_taxonomy_category_needs_its_parent() -> None:
    sources = edited("taxonomy.yaml", "  statistics.fire:\n", "  statistic.fire:\n")
    [problem] = check_sources(sources)
    assert "parent category 'statistic'" in problem.message
    assert line_of(sources, "taxonomy.yaml", problem.line) == "statistic.fire:"


def test_misnamed_protocol_file_is_reported() -> None:
    sources = {**SOURCES, "protocols/vcs-group/notes.txt": b"remember the DPIA"}
    [problem] = check_sources(sources)
    assert problem.file == "protocols/vcs-group/notes.txt" and "<code>-v<version>.yaml" in problem.message


def test_load_bundle_raises_with_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "policies"
    (root / "protocols" / "x").mkdir(parents=True)
    (root / "taxonomy.yaml").write_bytes(SOURCES["taxonomy.yaml"])
    (root / "protocols" / "x" / "x-v1.yaml").write_text("code: x\n")
    with pytest.raises(PolicyError) as caught:
        load_bundle(root)
    files = {p.file for p in caught.value.problems}
    assert files == {"kmisa.yaml", "protocols/x/x-v1.yaml"}
    assert "kmisa.yaml is missing" in str(caught.value)


# --- hashes -------------------------------------------------------------------------------


def test_hashes_are_of_the_exact_bytes_and_the_bundle_hash_is_stable() -> None:
    bundle = bundle_from_sources(SOURCES)
    for loaded in bundle.protocols:
        assert loaded.sha256 == hashlib.sha256(SOURCES[loaded.path]).hexdigest()
    assert bundle.taxonomy_sha256 == hashlib.sha256(SOURCES["taxonomy.yaml"]).hexdigest()
    assert bundle_from_sources(dict(reversed(list(SOURCES.items())))).sha256 == bundle.sha256
    changed = bundle_from_sources(edited(VCS_V2, "# yaml-language-server", "# A comment changes the hash too\n#"))
    assert changed.sha256 != bundle.sha256
    assert {p.path: p.sha256 for p in changed.protocols if p.path != VCS_V2} == \
        {p.path: p.sha256 for p in bundle.protocols if p.path != VCS_V2}


def test_protocol_lookup_and_order() -> None:
    bundle = bundle_from_sources(SOURCES)
    keys = [p.key for p in bundle.protocols]
    assert keys == sorted(keys)
    assert bundle.protocol("vcs-safeguarding", 2).protocol.supersedes == 1
    assert bundle.protocol("vcs-safeguarding", 9) is None


# --- the legal code lists in the shipped taxonomy -----------------------------------------


def test_taxonomy_code_lists() -> None:
    taxonomy = bundle_from_sources(SOURCES).taxonomy
    assert set(taxonomy.lawful_bases) == {"a", "b", "c", "d", "e", "ea", "f"}
    assert {c for c, b in taxonomy.lawful_bases.items() if b.unavailable_to_public_authorities} == {"ea", "f"}
    assert "Data (Use and Access) Act 2025" in taxonomy.lawful_bases["ea"].citation
    conditions = taxonomy.special_category_conditions
    assert set(conditions) == set("abcdefghij")
    assert {c: (v.schedule1_part, v.schedule1_paragraphs) for c, v in conditions.items() if v.schedule1_part} == {
        "b": (1, (1,)), "g": (2, None), "h": (1, (2,)), "i": (1, (3,)), "j": (1, (4,))}
    paragraphs = taxonomy.schedule1_paragraphs
    assert sorted(paragraphs) == list(range(1, 38))
    assert [n for n in range(1, 5) if paragraphs[n].apd_required] == [1]
    assert all(paragraphs[n].apd_required for n in range(6, 29))
    assert [n for n, p in paragraphs.items() if p.apd_exempt_when_recipient_competent_authority] == [10]
    assert not paragraphs[5].condition
    assert set(taxonomy.statutory_gateways) == {"cda-1998-s17", "cda-1998-s17a", "cda-1998-s115", "asbcpa-2014-s104",
                                                "asbcpa-2014-sch4", "dvcva-2004-s9", "ca-2004-s11"}
    assert [c for c, g in taxonomy.statutory_gateways.items() if g.authorises_law_enforcement_reuse] == ["cda-1998-s115"]
    assert set(taxonomy.emergency_categories) == {"risk_to_life", "serious_physical_harm", "immediate_safeguarding",
                                                  "public_health", "national_security", "civil_emergency"}
    assert "deadline" in taxonomy.non_emergency_urgencies
    assert {m.security for m in taxonomy.transfer_methods.values()} == {"secure", "insecure"}


def test_category_flags_are_inherited() -> None:
    taxonomy = bundle_from_sources(SOURCES).taxonomy
    flags = effective_category_flags(taxonomy)
    assert flags["criminal_offence.intelligence"]["criminal_offence"]
    assert flags["health.mental_health"]["special_category"] and flags["health.mental_health"]["health"]
    assert flags["statistics.health"] == {"special_category": False, "criminal_offence": False, "health": False,
                                          "depersonalised": True}
    assert category_lineage("criminal_offence.intelligence") == ("criminal_offence.intelligence", "criminal_offence")


def test_kmisa_settings() -> None:
    kmisa = bundle_from_sources(SOURCES).kmisa
    assert [(v.label, v.published_on, v.valid) for v in kmisa.versions] == [
        ("2013", date(2013, 4, 1), False), ("2018", date(2018, 5, 25), True), ("2024", date(2024, 4, 1), True)]
    assert (kmisa.grace_period_days, kmisa.ad_hoc_threshold.count, kmisa.ad_hoc_threshold.window_days) == (90, 3, 90)
    assert kmisa.reminder_milestones_days == (90, 30, 7, 0)
    assert kmisa.signature_renewal_window_days == 90
