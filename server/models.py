"""The database tables, as SQLAlchemy 2 typed models. Ids are UUID strings, as Mender's."""
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes from every database (SQLite hands back naive ones)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict: JSON, list: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="admin")  # see auth.ROLES
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """Every JWT the server issued, so that it can be revoked before it expires."""
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)  # the jti
    kind: Mapped[str] = mapped_column(String(16))  # device | user | api
    subject: Mapped[str] = mapped_column(String(36), index=True)  # device or user id
    name: Mapped[str | None] = mapped_column(String(100))  # personal API tokens
    # A device token's key: rejecting the key revokes its tokens, not the device's others.
    auth_set_id: Mapped[str | None] = mapped_column(String(36))
    # What an API token may do (auth.SCOPES), never more than its user's role; None (login
    # tokens, and every token from before scopes): what its user's role allows.
    scope: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The identity as canonical JSON (sorted keys, compact), so equal identities compare equal;
    # unique through its SHA-256 (a B-tree entry of PostgreSQL holds at most about 2.7 kB).
    identity: Mapped[str] = mapped_column(Text)
    identity_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # see devices.service.STATUSES
    group_name: Mapped[str | None] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    auth_sets: Mapped[list["AuthSet"]] = relationship(
        back_populates="device", cascade="all, delete-orphan", order_by="AuthSet.created_at")
    attributes: Mapped[list["InventoryAttribute"]] = relationship(
        cascade="all, delete-orphan", order_by="InventoryAttribute.name")


class AuthSet(Base):
    """One (identity, public key) pair a device authenticated with; the unit of acceptance."""
    __tablename__ = "auth_sets"
    __table_args__ = (UniqueConstraint("device_id", "pubkey"),
                      # admission's rate limit counts a source's new keys of the last minutes
                      Index("ix_auth_sets_source_created_at", "source", "created_at"))
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    pubkey: Mapped[str] = mapped_column(Text)  # PKIX PEM, as re-encoded by the server
    status: Mapped[str] = mapped_column(String(16))
    # The address (an IPv6 /64) the key first came from; None when preauthorized.
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    device: Mapped[Device] = relationship(back_populates="auth_sets")


class InventoryAttribute(Base):
    __tablename__ = "inventory"
    # dynamic groups' `$exists` looks attributes up by name
    __table_args__ = (Index("ix_inventory_name", "name", "device_id"),)
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | list] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# Text compared byte by byte on both databases (PostgreSQL's default collation is the locale's).
BYTEWISE_TEXT = String(512, collation="C").with_variant(String(512), "sqlite")


class InventoryValue(Base):
    """Each scalar of a device's inventory (a list attribute gives one row per item), as text
    and, when it is a decimal number, as a number: what dynamic groups filter on, in SQL,
    through the two indexes. Kept by `inventory.service.update`; values longer than
    MAX_FILTERED_CHARS are not here (no filter sees them)."""
    __tablename__ = "inventory_values"
    __table_args__ = (Index("ix_inventory_values_text", "name", "value"),
                      Index("ix_inventory_values_number", "name", "number"))
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(BYTEWISE_TEXT, primary_key=True)
    number: Mapped[float | None] = mapped_column(Float)


class DynamicGroup(Base):
    """A group defined by an inventory filter (`inventory.filters`), evaluated when used."""
    __tablename__ = "dynamic_groups"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    filter: Mapped[list]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), index=True)
    device_types: Mapped[list]
    header: Mapped[dict]  # ArtifactHeader.to_dict(): provides, depends, payloads
    # unsigned (no manifest.sig) | unverified (signed, but the server had no verify keys) |
    # verified (by the key named here: its configured name and public key fingerprint)
    signature: Mapped[str] = mapped_column(String(16))
    signature_key_name: Mapped[str | None] = mapped_column(String(1024))
    signature_key_fingerprint: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    artifact_name: Mapped[str] = mapped_column(String(255))
    # Hand the artifact over even if installed or incompatible, and let the device decide.
    force: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    aborted_at: Mapped[datetime | None]
    # Attempts a device may make beyond its first: a failed one is offered the artifact again.
    retries: Mapped[int] = mapped_column(default=0, server_default="0")
    # Schedule: nothing starts before start_at, nor outside the daily window (minutes of the
    # day, UTC by the server's clock; start > end wraps past midnight).
    start_at: Mapped[datetime | None]
    window_start: Mapped[int | None]
    window_end: Mapped[int | None]
    # Paused (by an operator or a phase's failure threshold): devices not yet started get
    # nothing, those in the middle finish.
    paused_at: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # A deployment to a dynamic group: the group's name and its filter when the deployment
    # was created; `open_to_joiners` unless the operator fixed the set of devices at creation.
    dynamic_group: Mapped[str | None] = mapped_column(String(100))
    target_filter: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    open_to_joiners: Mapped[bool] = mapped_column(default=False)
    devices: Mapped[list["DeviceDeployment"]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan")
    phases: Mapped[list["DeploymentPhase"]] = relationship(
        cascade="all, delete-orphan", order_by="DeploymentPhase.number")


class DeploymentPhase(Base):
    """A part of a deployment's devices (each device is in one, for good), which starts at
    a time, once the phase before reached a success threshold, or when an operator releases
    it; the first one starts with the deployment. Its outcome counters are updated with each
    device's final status, so that thresholds never count rows."""
    __tablename__ = "deployment_phases"
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)  # from 0
    size: Mapped[int]
    start_at: Mapped[datetime | None]
    after_success: Mapped[int | None]  # percent of the phase before that succeeded
    # Its devices are those of the deployment matching this inventory filter (a canary the
    # operator chose, "the lab devices first"), not a share in hash order.
    target_filter: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    on_release: Mapped[bool] = mapped_column(default=False)  # an operator releases it
    # Failure threshold over the phase's finished devices: a count or a percentage.
    max_failures: Mapped[int | None]
    max_failure_percent: Mapped[int | None]
    started_at: Mapped[datetime | None]
    successes: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)


class DeviceDeployment(Base):
    __tablename__ = "device_deployments"
    __table_args__ = (
        UniqueConstraint("deployment_id", "device_id"),
        # Every poll asks whether its device has one open: a lookup in this index, which
        # holds only the open ones, costs the same however many a device has finished.
        Index("ix_device_deployments_open", "device_id",
              postgresql_where=text("finished_at IS NULL"),
              sqlite_where=text("finished_at IS NULL")),
        # Whether a deployment has devices left, asked when one of them finishes.
        Index("ix_device_deployments_open_by_deployment", "deployment_id",
              postgresql_where=text("finished_at IS NULL"),
              sqlite_where=text("finished_at IS NULL")),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(36), index=True)  # outlives a decommission
    artifact_id: Mapped[str | None] = mapped_column(
        ForeignKey("artifacts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), index=True)
    substate: Mapped[str | None] = mapped_column(Text)
    phase: Mapped[int] = mapped_column(default=0, server_default="0")  # DeploymentPhase.number
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")  # ended in a result
    log: Mapped[list | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    deployment: Mapped[Deployment] = relationship(back_populates="devices")


class LoginFailure(Base):
    """A failed login, counted by `users.throttle` under each key it throttles: the account
    from that source, and the source. Kept in the database, so every worker and instance
    counts the same failures."""
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what through the management API or the CLI."""
    __tablename__ = "audit_log"
    # SQLite only autoincrements an INTEGER primary key.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict] = mapped_column(default=dict)


class Event(Base):
    """Something that happened to a deployment or a device, for the event stream and the
    webhooks. Ids increase in commit order (`events.service.publish`); rows older than
    EVENT_RETENTION_DAYS are deleted."""
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict]


class Webhook(Base):
    """A URL that receives every event (or those of `types`), in order, signed with `secret`.
    `last_event_id`: the last event delivered (or skipped) to it; `claimed_until`: while a
    server delivers to it, no other does."""
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(256))
    types: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(default=0)  # of the next event, in a row
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
