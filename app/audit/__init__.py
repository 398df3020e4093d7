"""Tamper-evident audit trail: every decision, transfer and register change, chained so that an
edit, a deletion or a rewritten history is detectable (the pure core is ``chain``)."""
