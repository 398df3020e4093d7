"""The register of sharing protocols in the shape of a record of processing (UK GDPR Art 30).

Each loaded protocol version is one processing activity: its purposes, the lawful bases and the
Article 9 and Article 10 conditions each party relies on, the categories of data and of data
subjects, who receives it, how long they may keep it, how it may travel (the security measures),
the statutory gateways and the DPIA. Everything comes from the protocol files exactly as loaded
(``protocols.stored_bundle``), labelled from the taxonomy, so the register cannot drift from the
rules the decisions are made under.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import date

from sqlalchemy.orm import Session

from app.auth.models import User
from app.errors import NotFound
from app.policies.schema import Protocol, Taxonomy
from app.protocols import service as protocols
from app.registry import service as registry
from app.web.filters import uk_date


@dataclass(frozen=True)
class ProcessingActivity:
    """One row of the record; every list is what a DPO would write in that column."""

    protocol: str
    version: int
    title: str
    subgroup: str
    status: str
    effective_from: date
    review_on: date
    ends_on: date | None
    content_hash: str
    purposes: tuple[str, ...]
    lawful_bases: tuple[str, ...]
    special_category_conditions: tuple[str, ...]
    criminal_offence_conditions: tuple[str, ...]
    data_categories: tuple[str, ...]
    data_subjects: tuple[str, ...]
    providers: tuple[str, ...]
    recipients: tuple[str, ...]
    retention: tuple[str, ...]
    transfer_methods: tuple[str, ...]
    statutory_gateways: tuple[str, ...]
    dpia: str
    caldicott: str
    onward_sharing: str

    @property
    def reference(self) -> str:
        return f"{self.protocol}:v{self.version}"


#: CSV headings, in the order of the Art 30(1) list where it has one.
CSV_HEADINGS = {
    "protocol": "Protocol", "version": "Version", "title": "Processing activity", "subgroup": "Subgroup",
    "status": "Status", "effective_from": "Effective from", "review_on": "Review by", "ends_on": "Ends on",
    "purposes": "Purposes (Art 30(1)(b))", "lawful_bases": "Lawful bases (Art 6)",
    "special_category_conditions": "Special category conditions (Art 9, DPA 2018 Sch 1)",
    "criminal_offence_conditions": "Criminal offence data conditions (Art 10)",
    "data_subjects": "Categories of data subjects (Art 30(1)(c))",
    "data_categories": "Categories of personal data (Art 30(1)(c))", "providers": "Disclosed by",
    "recipients": "Recipients (Art 30(1)(d))", "retention": "Retention (Art 30(1)(f))",
    "transfer_methods": "Security measures: transfer methods (Art 30(1)(g))",
    "statutory_gateways": "Statutory gateways", "dpia": "DPIA (Art 35)", "caldicott": "Caldicott approval",
    "onward_sharing": "Onward sharing", "content_hash": "Protocol file SHA-256",
}


def register(session: Session, actor: User | None, *, as_of: date, in_force_only: bool = False) -> list[ProcessingActivity]:
    """Every loaded protocol version as a processing activity, newest version first per protocol."""
    from app.audit.workspace import require_reader

    require_reader(actor)
    views = protocols.list_protocols(session, as_of)
    if not views:
        return []
    try:
        bundle = protocols.stored_bundle(session)
    except NotFound:
        return []
    names = {o.code: o.name for o in registry.list_organisations(session)}
    activities = []
    for view in views:
        loaded = bundle.protocol(view.version.code, view.version.version)
        if loaded is None:
            continue
        if in_force_only and view.status is not protocols.ProtocolStatus.APPROVED:
            continue
        activities.append(_activity(view, loaded.protocol, bundle.taxonomy, names))
    return activities


def _activity(view: protocols.ProtocolView, protocol: Protocol, taxonomy: Taxonomy,
              names: dict[str, str]) -> ProcessingActivity:
    def name(code: str) -> str:
        return names.get(code, code)

    def label(table: dict, code: str) -> str:
        entry = table.get(code)
        return entry.label if entry is not None else code

    lawful, special, criminal, retention = [], [], [], []
    for party in protocol.parties:
        if party.lawful_bases:
            lawful.append(f"{name(party.organisation)}: " + ", ".join(
                f"Art 6(1)({b}) {label(taxonomy.lawful_bases, b).lower()}" for b in party.lawful_bases))
        if party.special_category_conditions:
            special.append(f"{name(party.organisation)}: " + ", ".join(
                f"Art 9(2)({c.article9})" + (f" with Sch 1 para {c.schedule1_paragraph}"
                                              f" ({_paragraph(taxonomy, c.schedule1_paragraph)})"
                                              if c.schedule1_paragraph else "")
                for c in party.special_category_conditions))
        if party.criminal_offence is not None:
            routes = (["official authority"] if party.criminal_offence.official_authority else []) + [
                f"Sch 1 para {p} ({_paragraph(taxonomy, p)})" for p in party.criminal_offence.schedule1_paragraphs]
            if routes:
                criminal.append(f"{name(party.organisation)}: " + ", ".join(routes))
        if "recipient" in party.roles and party.max_retention_months:
            retention.append(f"{name(party.organisation)}: at most {party.max_retention_months} months")
    categories = [f"{label(taxonomy.data_categories, c)} (personal)" for c in protocol.data_categories.personal]
    categories += [f"{label(taxonomy.data_categories, c)} (depersonalised)"
                   for c in protocol.data_categories.depersonalised]
    recipients = [f"{name(p.organisation)} ({p.tier}"
                  + (f", limited to {', '.join(p.limited_to_categories)}" if p.limited_to_categories else "") + ")"
                  for p in protocol.parties if "recipient" in p.roles]
    methods = [f"{label(taxonomy.transfer_methods, m)} ({taxonomy.transfer_methods[m].security})"
               if m in taxonomy.transfer_methods else m for m in protocol.transfer_methods]
    gateways = [f"{taxonomy.statutory_gateways[g].title} ({taxonomy.statutory_gateways[g].citation})"
                if g in taxonomy.statutory_gateways else g for g in protocol.statutory_gateways]
    dpia = protocol.dpia
    caldicott = protocol.caldicott
    onward = protocol.onward_sharing
    return ProcessingActivity(
        protocol=protocol.code, version=protocol.version, title=protocol.title,
        subgroup=view.version.subgroup.name, status=view.status.value, effective_from=protocol.effective_from,
        review_on=protocol.review_on, ends_on=protocol.ends_on, content_hash=view.version.content_hash,
        purposes=tuple(label(taxonomy.purposes, p) for p in protocol.purposes),
        lawful_bases=tuple(lawful), special_category_conditions=tuple(special),
        criminal_offence_conditions=tuple(criminal), data_categories=tuple(categories),
        data_subjects=tuple(label(taxonomy.subject_types, s) for s in protocol.subject_types),
        providers=tuple(name(p.organisation) for p in protocol.parties if "provider" in p.roles),
        recipients=tuple(recipients), retention=tuple(retention), transfer_methods=tuple(methods),
        statutory_gateways=tuple(gateways),
        dpia=(f"{dpia.reference}, completed {uk_date(dpia.completed_on)}, review by {uk_date(dpia.review_on)}; "
              f"covers bulk or matching: {'yes' if dpia.covers_bulk else 'no'}") if dpia else "None recorded",
        caldicott=("Not needed" if caldicott is None else
                   (f"Approved by {caldicott.approved_by or 'the Caldicott Guardian'}"
                    + (f" on {uk_date(caldicott.approved_on)}" if caldicott.approved_on else "")
                    if caldicott.approved else "Not approved")
                   + ("; a confidentiality basis is needed for each request"
                      if caldicott.confidentiality_basis_required else "")),
        onward_sharing=("Not allowed" if not onward.allowed_recipients else
                        "Only to " + ", ".join(name(c) for c in onward.allowed_recipients)
                        + (f" ({onward.conditions})" if onward.conditions else "")),
    )


def _paragraph(taxonomy: Taxonomy, number: int) -> str:
    entry = taxonomy.schedule1_paragraphs.get(number)
    return entry.title.lower() if entry is not None else "unknown paragraph"


def csv_rows(activities: list[ProcessingActivity]) -> Iterator[str]:
    """The register as CSV, one processing activity per row, lists joined with "; "."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    columns = [f.name for f in fields(ProcessingActivity) if f.name in CSV_HEADINGS]
    ordered = [c for c in CSV_HEADINGS if c in columns]
    writer.writerow([CSV_HEADINGS[c] for c in ordered])
    for activity in activities:
        row = []
        for column in ordered:
            value = getattr(activity, column)
            if isinstance(value, tuple):
                value = "; ".join(value)
            elif isinstance(value, date):
                value = value.isoformat()
            elif value is None:
                value = ""
            row.append(value)
        writer.writerow(row)
    yield buffer.getvalue()
