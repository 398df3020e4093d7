"""Renewal and review reminders: what falls due, claimed once per milestone, e-mailed through the outbox."""
