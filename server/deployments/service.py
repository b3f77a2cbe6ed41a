"""Deployments: which device gets which artifact, and what each device reports back.

A deployment names an artifact and a set of devices (a list, a static group or all
accepted devices, resolved when it is created; or a dynamic group, whose devices at
creation are joined by those that match its filter later, while the deployment is open,
unless the operator fixed the set). On a device's first `next`
the server picks the artifact of that name compatible with the device's type
and provides; without `force` a device already running it, or with no
compatible artifact, is finished right there (`already-installed`, `noartifact`)
and never sees the deployment.
"""
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import exists, text
from sqlalchemy.exc import IntegrityError

from artifact import CompatibilityError
from artifact.provides import check_compatible

from .. import audit
from ..artifacts import service as artifacts
from ..database import db
from ..devices.service import ACCEPTED
from ..errors import ApiError
from ..events import service as events
from ..inventory import groups as dynamic_groups
from ..models import Artifact, Deployment, Device, DeviceDeployment, utcnow


class Status(StrEnum):
    """A device's status in a deployment (Mender's), in the order a deployment meets them."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    PAUSE_BEFORE_INSTALLING = "pause_before_installing"
    INSTALLING = "installing"
    PAUSE_BEFORE_REBOOTING = "pause_before_rebooting"
    REBOOTING = "rebooting"
    PAUSE_BEFORE_COMMITTING = "pause_before_committing"
    SUCCESS = "success"
    FAILURE = "failure"
    ALREADY_INSTALLED = "already-installed"
    NOARTIFACT = "noartifact"
    ABORTED = "aborted"
    DECOMMISSIONED = "decommissioned"


PENDING = Status.PENDING
ALL_STATUSES = tuple(Status)
IN_PROGRESS = (Status.DOWNLOADING, Status.PAUSE_BEFORE_INSTALLING, Status.INSTALLING,
               Status.PAUSE_BEFORE_REBOOTING, Status.REBOOTING, Status.PAUSE_BEFORE_COMMITTING)
# What a device may report: its progress, or how it ended.
REPORTED = (*IN_PROGRESS, Status.SUCCESS, Status.FAILURE, Status.ALREADY_INSTALLED)
FINAL = (Status.SUCCESS, Status.FAILURE, Status.ALREADY_INSTALLED, Status.NOARTIFACT,
         Status.ABORTED, Status.DECOMMISSIONED)
MAX_LOG_MESSAGES = 100_000
# pg_advisory_xact_lock key ("join"): see `serialize_joining`.
JOINING_LOCK = 0x6A6F696E


# -- device side ------------------------------------------------------------------------------


# Correlated to the device of a poll's token lookup
# (`device_required(has_open_deployment=...)`): whether anything is open for it comes with
# the token check, in the same round trip. An aborted deployment has nothing open (`abort`
# finishes its devices in the same commit).
HAS_OPEN_DEPLOYMENT = exists().where(
    DeviceDeployment.device_id == Device.id, DeviceDeployment.finished_at.is_(None))


def next_for_device(device_id: str, provides: dict[str, str],
                    anything_open: bool = True) -> dict | None:
    """The deployment the device should run now, as Mender's `next` answer, or None (204).
    `anything_open` False (from the token's lookup): nothing to look for, no query at all."""
    device_type = provides.get("device_type")
    if not isinstance(device_type, str) or not device_type:
        raise ApiError(400, "device_type is required")
    if not anything_open:  # almost every poll: no ORM session, no writes, no commit
        return None
    open_deployments = (db.session.query(DeviceDeployment).join(Deployment)
                        .filter(DeviceDeployment.device_id == device_id,
                                DeviceDeployment.finished_at.is_(None),
                                Deployment.aborted_at.is_(None))
                        .order_by(Deployment.created_at, Deployment.id))
    for device_deployment in open_deployments.all():
        if device_deployment.artifact_id is None:
            assigned = _assign(device_deployment, device_type, provides)
            db.session.commit()
            if not assigned:
                continue
        return _next_answer(device_deployment)
    return None


def _assign(device_deployment: DeviceDeployment, device_type: str, provides: dict) -> bool:
    deployment = device_deployment.deployment
    if not deployment.force and provides.get("artifact_name") == deployment.artifact_name:
        _finish(device_deployment, Status.ALREADY_INSTALLED)
        _finished_event(device_deployment)
        return False
    artifact = _select_artifact(deployment, device_type, provides)
    if artifact is None:
        _finish(device_deployment, Status.NOARTIFACT)
        _finished_event(device_deployment)
        return False
    device_deployment.artifact_id = artifact.id
    return True


def _select_artifact(deployment: Deployment, device_type: str, provides: dict) -> Artifact | None:
    candidates = artifacts.list_artifacts(deployment.artifact_name)
    for artifact in candidates:
        try:
            check_compatible(artifacts.header_of(artifact), device_type, provides)
            return artifact
        except CompatibilityError:
            continue
    return candidates[0] if deployment.force and candidates else None


def _next_answer(device_deployment: DeviceDeployment) -> dict:
    artifact = artifacts.get(device_deployment.artifact_id)
    uri, expires = artifacts.device_download_url(artifact)
    return {
        "id": device_deployment.deployment_id,
        "artifact": {
            "id": artifact.id,
            "artifact_name": artifact.name,
            "source": {"uri": uri,
                       "expire": datetime.fromtimestamp(expires, UTC).isoformat()},
            "device_types_compatible": artifact.device_types,
        },
    }


def _device_deployment(device_id: str, deployment_id: str) -> DeviceDeployment:
    """Only the device's own deployments: another device's is as good as missing."""
    found = db.session.query(DeviceDeployment).filter_by(
        deployment_id=deployment_id, device_id=device_id).one_or_none()
    if found is None:
        raise ApiError(404, f"no deployment {deployment_id} for this device")
    return found


def report_status(device_id: str, deployment_id: str, status: str,
                  substate: str | None) -> None:
    if status not in REPORTED:
        raise ApiError(400, f"status must be one of {', '.join(REPORTED)}")
    device_deployment = _device_deployment(device_id, deployment_id)
    if device_deployment.status == Status.ABORTED:
        raise ApiError(409, "deployment aborted")
    if device_deployment.finished_at is not None:
        if device_deployment.status == status:
            return
        raise ApiError(409, f"deployment already finished: {device_deployment.status}")
    changed = device_deployment.status != status
    device_deployment.status, device_deployment.substate = status, substate
    if status in FINAL:
        device_deployment.finished_at = utcnow()
        _finished_event(device_deployment)
    elif changed:  # progress, for live views (a repeated report adds nothing)
        events.publish(events.DEPLOYMENT_DEVICE_STATUS, {
            "deployment_id": deployment_id, "device_id": device_id, "status": status})
    db.session.commit()


def store_log(device_id: str, deployment_id: str, messages: list) -> None:
    if len(messages) > MAX_LOG_MESSAGES or not all(
            isinstance(m, dict) and isinstance(m.get("message"), str) for m in messages):
        raise ApiError(400, "messages must be a list of {timestamp, level, message} objects")
    device_deployment = _device_deployment(device_id, deployment_id)
    device_deployment.log = [{"timestamp": str(m.get("timestamp", "")),
                              "level": str(m.get("level", "")), "message": m["message"]}
                             for m in messages]
    db.session.commit()


def _finish(device_deployment: DeviceDeployment, status: str) -> None:
    device_deployment.status = status
    device_deployment.finished_at = utcnow()


def _finished_event(device_deployment: DeviceDeployment) -> None:
    """Publish that the device finished, and that the deployment did if it was the last.
    Checked after `publish` took the events' lock: a device finishing at the same moment in
    another transaction has committed by then, so exactly one of them sees none left."""
    deployment_id = device_deployment.deployment_id
    events.publish(events.DEPLOYMENT_DEVICE_FINISHED, {
        "deployment_id": deployment_id, "device_id": device_deployment.device_id,
        "status": device_deployment.status})
    left = db.session.query(exists().where(DeviceDeployment.deployment_id == deployment_id,
                                           DeviceDeployment.finished_at.is_(None))).scalar()
    if not left:
        events.publish(events.DEPLOYMENT_FINISHED, {"deployment_id": deployment_id})


# -- management -------------------------------------------------------------------------------


def create(name: str, artifact_name: str, *, devices: list[str] | None = None,
           group: str | None = None, dynamic_group: str | None = None, fixed: bool = False,
           all_devices: bool = False, force: bool = False) -> Deployment:
    """Deploy to exactly one of: a device list, a static group, a dynamic group, all
    accepted devices. A deployment to a dynamic group stays open to devices that join the
    group (`add_joiners`) until it is aborted, unless `fixed`."""
    if sum((devices is not None, group is not None, dynamic_group is not None,
            all_devices)) != 1:
        raise ApiError(400, "give exactly one of 'devices', 'group', 'dynamic_group' or "
                            "'all_devices'")
    if fixed and dynamic_group is None:
        raise ApiError(400, "'fixed' applies to a deployment to a dynamic group only")
    if not artifacts.list_artifacts(artifact_name):
        raise ApiError(400, f"no artifact named {artifact_name!r}")
    target_filter = None
    if dynamic_group is not None:
        chosen = dynamic_groups.find(dynamic_group)
        if chosen is None:
            raise ApiError(400, f"no dynamic group {dynamic_group}")
        serialize_joining()
        target_filter, targets = chosen.filter, dynamic_groups.device_ids(chosen)
    elif devices is not None:
        known = {d for (d,) in db.session.query(Device.id).filter(Device.id.in_(devices))}
        unknown = sorted(set(devices) - known)
        if unknown:
            raise ApiError(400, f"unknown device(s): {', '.join(unknown[:10])}")
        targets = sorted(known)
    else:
        query = db.session.query(Device.id).filter(Device.status == ACCEPTED)
        if group is not None:
            query = query.filter(Device.group_name == group)
        targets = [d for (d,) in query.order_by(Device.id)]
    open_to_joiners = dynamic_group is not None and not fixed
    if not targets and not open_to_joiners:
        raise ApiError(400, "the deployment would have no devices")
    deployment = Deployment(name=name, artifact_name=artifact_name, force=force,
                            dynamic_group=dynamic_group, target_filter=target_filter,
                            open_to_joiners=open_to_joiners)
    deployment.devices = [DeviceDeployment(device_id=d, status=PENDING) for d in targets]
    db.session.add(deployment)
    db.session.flush()
    audit.record("deployment.create", deployment.id, name=name, artifact_name=artifact_name,
                 devices=len(targets), group=group, dynamic_group=dynamic_group,
                 fixed=fixed if dynamic_group else None, all_devices=all_devices, force=force)
    events.publish(events.DEPLOYMENT_CREATED, {
        "deployment_id": deployment.id, "name": name, "artifact_name": artifact_name,
        "devices": len(targets), "dynamic_group": dynamic_group,
        "open_to_joiners": open_to_joiners})
    db.session.commit()
    return deployment


def get(deployment_id: str) -> Deployment:
    deployment = db.session.get(Deployment, deployment_id)
    if deployment is None:
        raise ApiError(404, f"no deployment {deployment_id}")
    return deployment


def list_deployments() -> list[Deployment]:
    return db.session.query(Deployment).order_by(Deployment.created_at.desc()).all()


def abort(deployment_id: str) -> Deployment:
    """Finish the devices that have not; a deployment open to joiners is closed to them
    (aborting is how one ends, even when every device it reached has finished)."""
    deployment = get(deployment_id)
    if deployment.aborted_at is not None:
        raise ApiError(409, "deployment already aborted")
    if not deployment.open_to_joiners and all(d.finished_at is not None
                                              for d in deployment.devices):
        raise ApiError(409, "deployment already finished")
    deployment.aborted_at = utcnow()
    for device_deployment in deployment.devices:
        if device_deployment.finished_at is None:
            _finish(device_deployment, Status.ABORTED)
    audit.record("deployment.abort", deployment.id)
    events.publish(events.DEPLOYMENT_ABORTED, {"deployment_id": deployment.id})
    db.session.commit()
    return deployment


def device_log(deployment_id: str, device_id: str) -> list[dict]:
    device_deployment = db.session.query(DeviceDeployment).filter_by(
        deployment_id=get(deployment_id).id, device_id=device_id).one_or_none()
    if device_deployment is None or device_deployment.log is None:
        raise ApiError(404, f"no log of device {device_id} in deployment {deployment_id}")
    return device_deployment.log


def statistics(deployment: Deployment) -> dict[str, int]:
    counts = dict.fromkeys(ALL_STATUSES, 0)
    for device_deployment in deployment.devices:
        counts[device_deployment.status] = counts.get(device_deployment.status, 0) + 1
    return counts


def status_of(deployment: Deployment) -> str:
    if deployment.aborted_at is not None:
        return Status.ABORTED
    if not deployment.devices:  # a dynamic group's, waiting for its first device
        return PENDING
    if all(d.finished_at is not None for d in deployment.devices):
        return "finished"
    if any(d.status != PENDING for d in deployment.devices):
        return "inprogress"
    return PENDING


def deployment_view(deployment: Deployment) -> dict:
    return {
        "id": deployment.id,
        "name": deployment.name,
        "artifact_name": deployment.artifact_name,
        "force": deployment.force,
        "dynamic_group": deployment.dynamic_group,
        "filter": deployment.target_filter,
        "open_to_joiners": deployment.open_to_joiners and deployment.aborted_at is None,
        "status": status_of(deployment),
        "created_at": deployment.created_at.isoformat(),
        "device_count": len(deployment.devices),
        "statistics": statistics(deployment),
    }


def device_deployment_view(device_deployment: DeviceDeployment) -> dict:
    finished = device_deployment.finished_at
    return {
        "device_id": device_deployment.device_id,
        "status": device_deployment.status,
        "substate": device_deployment.substate,
        "artifact_id": device_deployment.artifact_id,
        "created_at": device_deployment.created_at.isoformat(),
        "finished_at": finished.isoformat() if finished else None,
        "has_log": device_deployment.log is not None,
    }


def outcomes_since(since: datetime) -> list[tuple[datetime, str]]:
    """(finished_at, status) of each device's deployment that ended in success or failure
    since `since`."""
    rows = db.session.query(DeviceDeployment.finished_at, DeviceDeployment.status).filter(
        DeviceDeployment.finished_at >= since,
        DeviceDeployment.status.in_((Status.SUCCESS, Status.FAILURE)))
    return [(finished_at, status) for finished_at, status in rows]


# -- devices joining a dynamic group while its deployment is open ------------------------------
# The `phases` work adds devices to an open deployment its own way (each gets a phase); the
# two meet at `add_devices_to_open_deployment`.


def add_joiners(device_id: str) -> list[str]:
    """Add the device to every open deployment to a dynamic group whose filter it now
    matches (and that it is not in yet); returns their ids. Called in the transaction that
    changed its inventory or accepted it: when it may have joined, never on a poll."""
    serialize_joining()
    open_deployments = db.session.query(Deployment.id, Deployment.target_filter).filter(
        Deployment.open_to_joiners.is_(True), Deployment.aborted_at.is_(None)).all()
    joined = []
    for deployment_id, target_filter in open_deployments:
        matches = dynamic_groups.members(target_filter).filter(
            Device.id == device_id,
            ~exists().where(DeviceDeployment.deployment_id == deployment_id,
                            DeviceDeployment.device_id == Device.id)).first()
        if matches is not None and add_devices_to_open_deployment(deployment_id, [device_id]):
            joined.append(deployment_id)
    return joined


def serialize_joining() -> None:
    """On PostgreSQL, a deployment to a dynamic group being created and a device joining
    take turns (until commit): otherwise a device whose inventory changes while the
    deployment is created could be seen by neither (the deployment's member query reads the
    old inventory, the device's check does not see the uncommitted deployment). Taken
    before the events' lock wherever both are, so the two never deadlock. SQLite has one
    writer anyway."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": JOINING_LOCK})


def add_devices_to_open_deployment(deployment_id: str, device_ids: list[str]) -> list[str]:
    """Add devices (pending) to an open deployment; returns those added (a device added at
    the same moment by another request is left to it)."""
    added = []
    for device_id in device_ids:
        try:
            with db.session.begin_nested():
                db.session.add(DeviceDeployment(deployment_id=deployment_id,
                                                device_id=device_id, status=PENDING))
        except IntegrityError:
            continue
        events.publish(events.DEPLOYMENT_DEVICE_ADDED,
                       {"deployment_id": deployment_id, "device_id": device_id})
        added.append(device_id)
    return added
