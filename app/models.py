"""Every table, imported in one place so the metadata Alembic compares against is complete."""
from app.audit.models import AuditCheckpoint, AuditEvent  # noqa: F401
from app.auth.models import AccessRevision, ApiToken, User, UserRole  # noqa: F401
from app.decisions.models import EmergencyReview, Exchange, Resolution  # noqa: F401
from app.protocols.models import PolicyDocument, ProtocolSignOff, ProtocolVersion  # noqa: F401
from app.reminders.models import CalendarFeedToken, Notification, OutboxMessage, ReminderClaim  # noqa: F401
from app.registry.models import KmisaVersion, Organisation, RegisterRevision, Signature, Subgroup  # noqa: F401
from app.transfers.models import Transfer, TransferChunk, TransferDownload  # noqa: F401
