"""Reading, validating and hashing the ``policies/`` folder.

A DPO or coordinator edits these files by hand, so every problem is reported the way a
reviewer would write it on the file: which file, which line, which field, and what to
change. Checking happens in three passes, each only where the previous one succeeded for
that file: YAML syntax, the shape of each file (pydantic models in ``schema.py``), and
then the references between files (every code a protocol uses must exist in the
taxonomy; the file name must match the version it holds).

Organisations are deliberately *not* checked here: they live in the register, which
changes without a policy review, and the engine denies an exchange with an organisation
it does not know.

Everything here is pure apart from reading files in :func:`collect_sources`, so the
service can rebuild a bundle from the sources it stored in the database.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from app.policies.schema import (
    CATEGORY_FLAGS,
    KmisaSettings,
    Protocol,
    Taxonomy,
    category_lineage,
    effective_category_flags,
)

TAXONOMY_FILE = "taxonomy.yaml"
KMISA_FILE = "kmisa.yaml"
PROTOCOLS_DIR = "protocols"

_PROTOCOL_FILE = re.compile(r"^(?P<code>[a-z0-9]+(?:[-_][a-z0-9]+)*)-v(?P<version>[1-9][0-9]*)\.yaml$")

#: The Article 10 routes the engine reasons about; the taxonomy gives their labels and citations.
REQUIRED_ARTICLE10_ROUTES = ("official_authority", "schedule1")

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with the policy files, phrased as what to fix."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PolicyError(Exception):
    """The policy files cannot be loaded; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[PolicyProblem]):
        self.problems = tuple(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the policy files:\n{shown}{more}")


@dataclass(frozen=True)
class LoadedProtocol:
    """One protocol version as loaded: the model, its file and the hash of its exact bytes."""

    path: str
    sha256: str
    source: str
    protocol: Protocol

    @property
    def key(self) -> tuple[str, int]:
        return (self.protocol.code, self.protocol.version)


@dataclass(frozen=True)
class PolicyBundle:
    """Everything in ``policies/``, validated, with a hash that changes when any file does."""

    taxonomy: Taxonomy
    kmisa: KmisaSettings
    protocols: tuple[LoadedProtocol, ...]
    #: (relative path, SHA-256 of the file's bytes), sorted by path.
    file_hashes: tuple[tuple[str, str], ...]
    sha256: str
    taxonomy_sha256: str = ""
    kmisa_sha256: str = ""
    by_key: Mapping[tuple[str, int], LoadedProtocol] = field(default_factory=dict, repr=False, compare=False)

    def protocol(self, code: str, version: int) -> LoadedProtocol | None:
        return self.by_key.get((code, version))


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def repository_policies_root() -> Path:
    """The ``policies/`` folder of this checkout (the shipped Dartford set)."""
    return Path(__file__).resolve().parents[2] / "policies"


def collect_sources(root: Path) -> dict[str, bytes]:
    """The policy files under ``root`` by relative POSIX path: taxonomy, K-MISA and protocols.

    Everything under ``protocols/`` is collected, not only ``*.yaml``, so that a misnamed
    file is reported instead of silently ignored. README and generated schemas are not
    policy and are left out of the bundle hash.
    """
    root = Path(root)
    sources: dict[str, bytes] = {}
    for name in (TAXONOMY_FILE, KMISA_FILE):
        path = root / name
        if path.is_file():
            sources[name] = path.read_bytes()
    protocols = root / PROTOCOLS_DIR
    if protocols.is_dir():
        for path in sorted(protocols.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                sources[path.relative_to(root).as_posix()] = path.read_bytes()
    return sources


def check_policies(root: Path) -> list[PolicyProblem]:
    """Every problem in the policy folder ``root``; an empty list means it loads."""
    if not Path(root).is_dir():
        return [PolicyProblem(str(root), None, None, "the policies folder does not exist")]
    return check_sources(collect_sources(Path(root)))


def load_bundle(root: Path) -> PolicyBundle:
    """The validated bundle in ``root``; raises :class:`PolicyError` listing every problem."""
    if not Path(root).is_dir():
        raise PolicyError([PolicyProblem(str(root), None, None, "the policies folder does not exist")])
    return bundle_from_sources(collect_sources(Path(root)))


def check_sources(sources: Mapping[str, bytes]) -> list[PolicyProblem]:
    """Every problem in ``sources`` (relative path to file bytes)."""
    return _Checker(sources).run()[1]


def bundle_from_sources(sources: Mapping[str, bytes]) -> PolicyBundle:
    """Build a bundle from file contents, e.g. those stored in the database at load time."""
    bundle, problems = _Checker(sources).run()
    if problems or bundle is None:
        raise PolicyError(problems)
    return bundle


def bundle_hash(file_hashes: Iterable[tuple[str, str]]) -> str:
    """One hash over every policy file, in path order, so any change to any file changes it."""
    digest = hashlib.sha256()
    for path, sha in sorted(file_hashes):
        digest.update(f"{path}\0{sha}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that refuses duplicate keys, which plain YAML resolves by silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} appears twice: keep one", key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


class _Document:
    """One parsed file and the means to turn a field path into the line it was written on."""

    def __init__(self, path: str, raw: bytes):
        self.path = path
        self.raw = raw
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.text = ""
        self.data: Any = None
        self.problems: list[PolicyProblem] = []
        self._root_node: yaml.Node | None = None
        self._parse()

    def _parse(self) -> None:
        try:
            self.text = self.raw.decode("utf-8")
        except UnicodeDecodeError as error:
            self.problems.append(PolicyProblem(self.path, None, None, f"the file is not UTF-8 text ({error.reason})"))
            return
        try:
            # _StrictLoader is a SafeLoader subclass: no arbitrary objects are built.
            self.data = yaml.load(self.text, Loader=_StrictLoader)  # noqa: S506  # nosec B506
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark is not None else None
            what = " ".join(p for p in (error.context, error.problem) if p)
            self.problems.append(PolicyProblem(self.path, line, None, f"YAML syntax error: {what}"))
            return
        except yaml.YAMLError as error:
            self.problems.append(PolicyProblem(self.path, None, None, f"YAML error: {error}"))
            return
        if not isinstance(self.data, dict):
            self.problems.append(
                PolicyProblem(self.path, 1, None, "the file must be a YAML mapping of field: value lines")
            )

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, loc: Loc, message: str) -> PolicyProblem:
        return PolicyProblem(self.path, self.line_of(loc), _dotted(loc), message)

    def line_of(self, loc: Loc) -> int | None:
        """The 1-based line of the node at ``loc``, or of the nearest enclosing one that exists."""
        if self._root_node is None:
            try:
                self._root_node = yaml.compose(self.text, Loader=_BaseLoader)
            except yaml.YAMLError:
                return None
        node = self._root_node
        if node is None:
            return None
        key_node: yaml.Node | None = None
        for part in loc:
            if part == "[key]":
                return (key_node or node).start_mark.line + 1
            child = _child(node, part)
            if child is None:
                break
            key_node, node = child
        if isinstance(node, yaml.ScalarNode) or key_node is None:
            return node.start_mark.line + 1
        # A mapping or list starts on the line after its key; the key's line reads better.
        return key_node.start_mark.line + 1


def _child(node: yaml.Node, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item
    return None


def _dotted(loc: Loc) -> str | None:
    parts = [str(p) for p in loc if p != "[key]"]
    return ".".join(parts) if parts else None


def _describe(error: Mapping[str, Any]) -> str:
    """A pydantic error rewritten as what the author should do."""
    kind = error["type"]
    loc = error["loc"]
    name = str(loc[-1]) if loc else "field"
    value = error.get("input")
    if kind == "missing":
        return f"the required field '{name}' is missing: add it"
    if kind == "extra_forbidden":
        return f"'{name}' is not a field here: remove it or correct its spelling"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind == "string_type" and isinstance(value, (int, float, bool)):
        return f"{message}; put {value!r} in quotes"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a valid code: use lower-case letters and digits joined by '-' or '_'"
    if kind in ("int_type", "bool_type", "date_type", "date_from_datetime_parsing", "literal_error") or (
        kind.endswith("_parsing") and value is not None
    ):
        return f"{message} (found {value!r})"
    return message


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, sources: Mapping[str, bytes]):
        self.sources = sources
        self.problems: list[PolicyProblem] = []

    def run(self) -> tuple[PolicyBundle | None, list[PolicyProblem]]:
        taxonomy, taxonomy_doc = self._load_single(TAXONOMY_FILE, Taxonomy)
        kmisa, kmisa_doc = self._load_single(KMISA_FILE, KmisaSettings)
        if taxonomy is not None and taxonomy_doc is not None:
            self._report(taxonomy_doc, _check_taxonomy(taxonomy))
        if kmisa is not None and kmisa_doc is not None:
            self._report(kmisa_doc, _check_kmisa(kmisa))

        protocols = self._load_protocols(taxonomy)
        if self.problems or taxonomy is None or kmisa is None:
            return None, sorted(self.problems, key=lambda p: (p.file, p.line or 0, p.field or ""))

        file_hashes = tuple(
            sorted(
                [(TAXONOMY_FILE, taxonomy_doc.sha256), (KMISA_FILE, kmisa_doc.sha256)]  # type: ignore[union-attr]
                + [(p.path, p.sha256) for p in protocols]
            )
        )
        ordered = tuple(sorted(protocols, key=lambda p: (p.protocol.code, p.protocol.version)))
        bundle = PolicyBundle(
            taxonomy=taxonomy,
            kmisa=kmisa,
            protocols=ordered,
            file_hashes=file_hashes,
            sha256=bundle_hash(file_hashes),
            taxonomy_sha256=taxonomy_doc.sha256,  # type: ignore[union-attr]
            kmisa_sha256=kmisa_doc.sha256,  # type: ignore[union-attr]
            by_key={p.key: p for p in ordered},
        )
        return bundle, []

    def _report(self, document: _Document, found: Iterable[tuple[Loc, str]]) -> None:
        self.problems.extend(document.problem(loc, message) for loc, message in found)

    def _load_single(self, name: str, model: type[BaseModel]) -> tuple[Any, _Document | None]:
        raw = self.sources.get(name)
        if raw is None:
            self.problems.append(PolicyProblem(name, None, None, f"{name} is missing from the policies folder"))
            return None, None
        document = _Document(name, raw)
        return self._validate(document, model), document

    def _validate(self, document: _Document, model: type[BaseModel]) -> Any:
        if not document.ok:
            self.problems.extend(document.problems)
            return None
        try:
            return model.model_validate(document.data)
        except ValidationError as error:
            errors = error.errors(include_url=False)
            locs = [tuple(item["loc"]) for item in errors]
            for loc, item in zip(locs, errors):
                # A list whose items failed is also "too short" once they are dropped: say it once.
                if item["type"] == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs):
                    continue
                self.problems.append(document.problem(loc, _describe(item)))
            return None

    def _load_protocols(self, taxonomy: Taxonomy | None) -> list[LoadedProtocol]:
        loaded: list[LoadedProtocol] = []
        seen_versions: dict[tuple[str, int], str] = {}
        subgroup_of: dict[str, tuple[str, str]] = {}
        flags = effective_category_flags(taxonomy) if taxonomy is not None else {}
        for path in sorted(p for p in self.sources if p.startswith(PROTOCOLS_DIR + "/")):
            if not path.endswith(".yaml"):
                self.problems.append(
                    PolicyProblem(path, None, None, "protocol files are named <code>-v<version>.yaml: rename it")
                )
                continue
            document = _Document(path, self.sources[path])
            protocol: Protocol | None = self._validate(document, Protocol)
            if protocol is None:
                continue
            found = _check_protocol_path(protocol, path)
            found += _check_protocol(protocol)
            if taxonomy is not None:
                found += _check_protocol_codes(protocol, taxonomy, flags)
            key = (protocol.code, protocol.version)
            if key in seen_versions:
                found.append((("version",), f"{protocol.code} version {protocol.version} is also defined in "
                                            f"{seen_versions[key]}: a change is a new version"))
            seen_versions.setdefault(key, path)
            earlier = subgroup_of.setdefault(protocol.code, (protocol.subgroup, path))
            if earlier[0] != protocol.subgroup:
                found.append((("subgroup",), f"{protocol.code} belongs to subgroup '{earlier[0]}' in {earlier[1]}: "
                                             "every version of a protocol belongs to the same subgroup"))
            self._report(document, found)
            if not found:
                loaded.append(LoadedProtocol(path, document.sha256, document.text, protocol))
        return loaded


# ---------------------------------------------------------------------------------------------
# Checks across fields and files
# ---------------------------------------------------------------------------------------------


def _check_taxonomy(taxonomy: Taxonomy) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    categories = taxonomy.data_categories
    flags = effective_category_flags(taxonomy)
    for code, category in categories.items():
        parent = code.rpartition(".")[0]
        if parent and parent not in categories:
            found.append((("data_categories", code, "[key]"), f"its parent category '{parent}' is not defined: add it"))
        if parent:
            for flag in CATEGORY_FLAGS:
                if flag in category.model_fields_set and not getattr(category, flag) and flags.get(parent, {}).get(flag):
                    found.append((("data_categories", code, flag),
                                  f"cannot be false: '{parent}' sets it and children inherit it; remove the line"))
        own = flags[code]
        if own["depersonalised"] and (own["special_category"] or own["criminal_offence"] or own["health"]):
            found.append((("data_categories", code, "depersonalised"),
                          "depersonalised data identifies no one, so it cannot also be special category, criminal "
                          "offence or health data: move it out from under that parent"))

    paragraphs = taxonomy.schedule1_paragraphs
    for number, paragraph in paragraphs.items():
        if paragraph.apd_exempt_when_recipient_competent_authority and not paragraph.apd_required:
            found.append((("schedule1_paragraphs", number, "apd_exempt_when_recipient_competent_authority"),
                          "an exemption from the policy document only makes sense when apd_required is true"))
    for code, condition in taxonomy.special_category_conditions.items():
        if condition.schedule1_paragraphs is not None and condition.schedule1_part is None:
            found.append((("special_category_conditions", code, "schedule1_part"),
                          "give the Schedule 1 part the listed paragraphs belong to"))
        for index, number in enumerate(condition.schedule1_paragraphs or ()):
            entry = paragraphs.get(number)
            if entry is None:
                found.append((("special_category_conditions", code, "schedule1_paragraphs", index),
                              f"paragraph {number} is not in schedule1_paragraphs"))
            elif entry.part != condition.schedule1_part or not entry.condition:
                found.append((("special_category_conditions", code, "schedule1_paragraphs", index),
                              f"paragraph {number} is not a condition in Part {condition.schedule1_part}"))
    for route in REQUIRED_ARTICLE10_ROUTES:
        if route not in taxonomy.article10_routes:
            found.append((("article10_routes",), f"the route '{route}' must be defined"))
    for code in taxonomy.non_emergency_urgencies:
        if code in taxonomy.emergency_categories:
            found.append((("non_emergency_urgencies", code, "[key]"),
                          f"'{code}' is also an emergency category: it cannot be both"))
    return found


def _check_kmisa(kmisa: KmisaSettings) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for index, version in enumerate(kmisa.versions):
        if version.label in seen:
            found.append((("versions", index, "label"), f"version '{version.label}' is listed twice"))
        seen.add(version.label)
    if not any(v.valid for v in kmisa.versions):
        found.append((("versions",), "at least one K-MISA version must be valid or nobody can share"))
    milestones = kmisa.reminder_milestones_days
    if list(milestones) != sorted(set(milestones), reverse=True):
        found.append((("reminder_milestones_days",), "list each milestone once, largest first (e.g. [90, 30, 7, 0])"))
    return found


def _check_protocol_path(protocol: Protocol, path: str) -> list[tuple[Loc, str]]:
    """The file's place and name must agree with what it says, so a reviewer can trust the tree."""
    found: list[tuple[Loc, str]] = []
    parts = path.split("/")
    if len(parts) != 3:
        return [((), f"protocol files live at protocols/<subgroup>/<code>-v<version>.yaml, not {path}")]
    _, folder, filename = parts
    match = _PROTOCOL_FILE.match(filename)
    if match is None:
        return [((), f"the file name '{filename}' must be <code>-v<version>.yaml")]
    if folder != protocol.subgroup:
        found.append((("subgroup",), f"the file is in the folder '{folder}' but says subgroup '{protocol.subgroup}': "
                                     "move the file or correct the subgroup"))
    if match["code"] != protocol.code:
        found.append((("code",), f"the file is named for '{match['code']}' but says code '{protocol.code}': "
                                 "rename the file or correct the code"))
    if int(match["version"]) != protocol.version:
        found.append((("version",), f"the file name says version {match['version']} but the file says "
                                    f"{protocol.version}: a new version is a new file"))
    return found


def _check_protocol(protocol: Protocol) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    if protocol.supersedes is not None and protocol.supersedes >= protocol.version:
        found.append((("supersedes",), f"version {protocol.version} can only supersede an earlier version"))
    if protocol.review_on <= protocol.effective_from:
        found.append((("review_on",), "the review date must be after effective_from"))
    if protocol.ends_on is not None and protocol.ends_on < protocol.effective_from:
        found.append((("ends_on",), "the end date cannot be before effective_from"))

    seen: dict[str, int] = {}
    for index, party in enumerate(protocol.parties):
        if party.organisation in seen:
            found.append((("parties", index, "organisation"),
                          f"'{party.organisation}' is already party {seen[party.organisation]}: list it once"))
        seen.setdefault(party.organisation, index)
        if len(set(party.roles)) != len(party.roles):
            found.append((("parties", index, "roles"), "list each role once"))
        if "recipient" in party.roles and party.max_retention_months is None:
            found.append((("parties", index, "max_retention_months"),
                          "a recipient needs a maximum retention (UK GDPR Art 5(1)(e)): add max_retention_months"))
        if party.tier == "depersonalised" and not protocol.data_categories.depersonalised:
            found.append((("parties", index, "tier"),
                          "no depersonalised data_categories are listed for this depersonalised-tier party"))
        for j, use in enumerate(party.special_category_conditions):
            if use in party.special_category_conditions[:j]:
                found.append((("parties", index, "special_category_conditions", j), "listed twice"))
    roles = {role for party in protocol.parties for role in party.roles}
    for role in ("provider", "recipient"):
        if role not in roles:
            found.append((("parties",), f"no party has the {role} role"))
    if not protocol.data_categories.personal and not protocol.data_categories.depersonalised:
        found.append((("data_categories",), "list at least one category under personal or depersonalised"))

    if protocol.dpia is not None:
        if protocol.dpia.review_on < protocol.dpia.completed_on:
            found.append((("dpia", "review_on"), "the DPIA review date cannot be before it was completed"))
        for index, purpose in enumerate(protocol.dpia.scope_purposes):
            if purpose not in protocol.purposes:
                found.append((("dpia", "scope_purposes", index), f"'{purpose}' is not one of this protocol's purposes"))
    caldicott = protocol.caldicott
    if caldicott is not None and caldicott.approved:
        if caldicott.approved_by is None:
            found.append((("caldicott", "approved_by"), "say which Caldicott Guardian approved it"))
        if caldicott.approved_on is None:
            found.append((("caldicott", "approved_on"), "say when the Caldicott Guardian approved it"))
    return found


def _check_protocol_codes(
    protocol: Protocol, taxonomy: Taxonomy, flags: Mapping[str, Mapping[str, bool]]
) -> list[tuple[Loc, str]]:
    """Every code the protocol uses must be in the taxonomy, so the engine never meets a stranger."""
    found: list[tuple[Loc, str]] = []

    def known(loc: Loc, codes: Iterable[str], table: Mapping[Any, Any], what: str) -> None:
        for index, code in enumerate(codes):
            if code not in table:
                found.append(((*loc, index), f"'{code}' is not a {what} in taxonomy.yaml"))

    known(("purposes",), protocol.purposes, taxonomy.purposes, "purpose")
    known(("subject_types",), protocol.subject_types, taxonomy.subject_types, "subject type")
    known(("statutory_gateways",), protocol.statutory_gateways, taxonomy.statutory_gateways, "statutory gateway")
    known(("data_categories", "personal"), protocol.data_categories.personal, taxonomy.data_categories,
          "data category")
    known(("data_categories", "depersonalised"), protocol.data_categories.depersonalised, taxonomy.data_categories,
          "data category")
    for index, code in enumerate(protocol.data_categories.depersonalised):
        if code in flags and not flags[code]["depersonalised"]:
            found.append((("data_categories", "depersonalised", index),
                          f"'{code}' identifies people: move it to personal or choose a depersonalised category"))
    for index, code in enumerate(protocol.transfer_methods):
        method = taxonomy.transfer_methods.get(code)
        if method is None:
            found.append((("transfer_methods", index), f"'{code}' is not a transfer method in taxonomy.yaml"))
        elif method.security != "secure":
            found.append((("transfer_methods", index),
                          f"'{code}' is insecure and cannot be permitted (UK GDPR Art 32): remove it"))

    personal = set(protocol.data_categories.personal)
    depersonalised = set(protocol.data_categories.depersonalised)
    for index, party in enumerate(protocol.parties):
        loc: Loc = ("parties", index)
        known((*loc, "lawful_bases"), party.lawful_bases, taxonomy.lawful_bases, "UK GDPR Art 6(1) basis")
        for j, use in enumerate(party.special_category_conditions):
            found += _check_special_use((*loc, "special_category_conditions", j), use.article9,
                                        use.schedule1_paragraph, taxonomy)
        if party.criminal_offence is not None:
            for j, number in enumerate(party.criminal_offence.schedule1_paragraphs):
                entry = taxonomy.schedule1_paragraphs.get(number)
                if entry is None or not entry.condition:
                    found.append(((*loc, "criminal_offence", "schedule1_paragraphs", j),
                                  f"paragraph {number} is not a Schedule 1 condition in taxonomy.yaml"))
        tier_allows = depersonalised if party.tier == "depersonalised" else personal | depersonalised
        for j, code in enumerate(party.limited_to_categories or ()):
            if code not in taxonomy.data_categories:
                found.append(((*loc, "limited_to_categories", j), f"'{code}' is not a data category in taxonomy.yaml"))
            elif not any(c in tier_allows for c in category_lineage(code)):
                found.append(((*loc, "limited_to_categories", j),
                              f"'{code}' is not among the protocol's {party.tier} data_categories: "
                              "a limit can only narrow them"))
    return found


def _check_special_use(loc: Loc, article9: str, paragraph: int | None, taxonomy: Taxonomy) -> list[tuple[Loc, str]]:
    condition = taxonomy.special_category_conditions.get(article9)
    if condition is None:
        return [((*loc, "article9"), f"'{article9}' is not an Art 9(2) condition in taxonomy.yaml")]
    if condition.schedule1_part is None:
        if paragraph is not None:
            return [((*loc, "schedule1_paragraph"),
                     f"Art 9(2)({article9}) needs no Schedule 1 paragraph: remove schedule1_paragraph")]
        return []
    allowed = allowed_paragraphs(taxonomy, article9)
    if paragraph is None:
        return [((*loc, "schedule1_paragraph"),
                 f"Art 9(2)({article9}) needs a DPA 2018 Schedule 1 Part {condition.schedule1_part} paragraph "
                 f"(one of {', '.join(map(str, sorted(allowed)))})")]
    if paragraph not in allowed:
        return [((*loc, "schedule1_paragraph"),
                 f"paragraph {paragraph} cannot be used with Art 9(2)({article9}); use one of "
                 f"{', '.join(map(str, sorted(allowed)))}")]
    return []


def allowed_paragraphs(taxonomy: Taxonomy, article9: str) -> frozenset[int]:
    """The Schedule 1 paragraphs an Article 9(2) condition may be met through (DPA 2018 s10)."""
    condition = taxonomy.special_category_conditions[article9]
    if condition.schedule1_part is None:
        return frozenset()
    if condition.schedule1_paragraphs is not None:
        return frozenset(condition.schedule1_paragraphs)
    return frozenset(
        number for number, entry in taxonomy.schedule1_paragraphs.items()
        if entry.part == condition.schedule1_part and entry.condition
    )
