"""Deployments: which device gets which artifact, and what each device reports back.

A deployment names an artifact and a set of devices (a list, a static group or all
accepted devices, resolved when it is created; or a dynamic group, whose devices at
creation are joined by those that match its filter later, while the deployment is open,
unless the operator fixed the set). On a device's first `next`
the server picks the artifact of that name compatible with the device's type
and provides; without `force` a device already running it, or with no
compatible artifact, is finished right there (`already-installed`, `noartifact`)
and never sees the deployment.

Rollouts (see server/README.md): a deployment's devices are split into phases once, in
the order of a hash of the deployment's and the device's ids; a phase starts at a time,
once the phase before reached a success threshold, or when an operator releases it. A
phase's failure threshold pauses the deployment; a device may retry; nothing starts
before the deployment's start time nor outside its daily window. A device waits for its
oldest open deployment (creation order, as Mender's). Every change of a deployment's state
goes through `transition`, which records it in the audit log with why.
"""
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from flask import current_app
from sqlalchemy import and_, exists, literal_column, or_, select, text, update
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
from ..models import (
    Artifact,
    Deployment,
    DeploymentPhase,
    Device,
    DeviceDeployment,
    utcnow,
)
from . import downloads


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
OUTCOMES = (Status.SUCCESS, Status.FAILURE)  # the end of an attempt
FINAL = (Status.SUCCESS, Status.FAILURE, Status.ALREADY_INSTALLED, Status.NOARTIFACT,
         Status.ABORTED, Status.DECOMMISSIONED)
MAX_LOG_MESSAGES = 100_000
# pg_advisory_xact_lock key ("join"): see `serialize_joining`.
JOINING_LOCK = 0x6A6F696E


# -- device side ------------------------------------------------------------------------------


# Correlated to the device of a poll's token lookup (`device_required(anything_to_do=...)`):
# whether `next_for_device` can have anything for the device comes with the token check, in
# the same round trip. False when nothing is open for it (an aborted deployment has nothing
# open: `abort` finishes its devices in the same commit), and also when every open one waits
# for something no poll can bring: pending in a paused deployment, or in a phase that starts
# only after the one before succeeded or when an operator releases it (those start on a
# report or a release). So the devices of a large phased deployment that waits, paused or
# behind its canary, poll at the cost of any other device, as `next_for_device` would answer
# them 204 anyway (their oldest open deployment cannot start).
ANYTHING_TO_DO = (
    select(DeviceDeployment.id)
    .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
    .join(DeploymentPhase, and_(DeploymentPhase.deployment_id == Deployment.id,
                                DeploymentPhase.number == DeviceDeployment.phase))
    .where(DeviceDeployment.device_id == Device.id, DeviceDeployment.finished_at.is_(None),
           # inline, not bound: db.read_one passes the jti alone
           or_(DeviceDeployment.status != literal_column(f"'{PENDING}'"),
               and_(Deployment.paused_at.is_(None),
                    or_(DeploymentPhase.started_at.is_not(None),
                        DeploymentPhase.start_at.is_not(None)))))
    .exists())


def now() -> datetime:
    """The server's clock (the app's CLOCK, which tests may set)."""
    return datetime.fromtimestamp(current_app.config["CLOCK"](), UTC)


def next_for_device(device_id: str, provides: dict[str, str],
                    anything_to_do: bool = True) -> dict | None:
    """The deployment the device should run now, as Mender's `next` answer, or None (204).
    `anything_to_do` False (ANYTHING_TO_DO, from the token's lookup): no query at all.
    Otherwise one query (the device's open deployments, with their phases), however large
    the fleet: whether a phase may start is in the rows it reads."""
    device_type = provides.get("device_type")
    if not isinstance(device_type, str) or not device_type:
        raise ApiError(400, "device_type is required")
    if not anything_to_do:  # almost every poll: no ORM session, no writes, no commit
        return None
    open_deployments = (
        db.session.query(DeviceDeployment, Deployment, DeploymentPhase)
        .select_from(DeviceDeployment)
        .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
        .join(DeploymentPhase, and_(DeploymentPhase.deployment_id == Deployment.id,
                                    DeploymentPhase.number == DeviceDeployment.phase))
        .filter(DeviceDeployment.device_id == device_id, DeviceDeployment.finished_at.is_(None),
                Deployment.aborted_at.is_(None))
        .order_by(Deployment.created_at, Deployment.id))
    for device_deployment, deployment, phase in open_deployments.all():
        if device_deployment.status == PENDING and not _may_start(deployment, phase):
            db.session.commit()  # a phase may have started (and been found too early)
            return None  # the device waits for its oldest open deployment
        if device_deployment.artifact_id is None:
            assigned = _assign(device_deployment, device_type, provides)
            db.session.commit()
            if not assigned:
                continue
        return _next_answer(device_deployment)
    return None


def _may_start(deployment: Deployment, phase: DeploymentPhase) -> bool:
    """Whether a device of `phase` that has not started may start now; starts the phase
    when its time has come."""
    moment = now()
    if deployment.paused_at is not None:
        return False
    if deployment.start_at is not None and moment < deployment.start_at:
        return False
    if phase.started_at is None:
        if phase.start_at is None or moment < phase.start_at:
            return False
        transition(deployment, Transition.PHASE_STARTED,
                   f"phase {phase.number + 1}: its start time {phase.start_at.isoformat()}",
                   phase=phase, actor=SYSTEM)
    return in_window(deployment, moment)


def in_window(deployment: Deployment, moment: datetime) -> bool:
    """Whether `moment` is inside the deployment's daily maintenance window (if any)."""
    if deployment.window_start is None:
        return True
    minute = moment.astimezone(UTC).hour * 60 + moment.astimezone(UTC).minute
    start, end = deployment.window_start, deployment.window_end
    return start <= minute < end if start < end else minute >= start or minute < end


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
    if device_deployment.status == PENDING and device_deployment.attempts \
            and status in OUTCOMES:
        return  # the failed attempt's result again (a resent report), not a new attempt's
    changed = device_deployment.status != status
    device_deployment.status, device_deployment.substate = status, substate
    if status in OUTCOMES:
        device_deployment.attempts += 1
        deployment = device_deployment.deployment
        if status == Status.FAILURE and device_deployment.attempts <= deployment.retries:
            device_deployment.status = PENDING  # offered again on a later poll
            events.publish(events.DEPLOYMENT_DEVICE_STATUS, {
                "deployment_id": deployment_id, "device_id": device_id, "status": status,
                "attempt": device_deployment.attempts, "retrying": True})
        else:  # the device's event first, then what its outcome made happen
            device_deployment.finished_at = utcnow()
            _device_finished_event(device_deployment)
            _count_outcome(deployment, device_deployment.phase, status)
            _deployment_finished_event_if_last(deployment_id)
    elif status in FINAL:
        device_deployment.finished_at = utcnow()
        _finished_event(device_deployment)
    elif changed:  # progress, for live views (a repeated report adds nothing)
        events.publish(events.DEPLOYMENT_DEVICE_STATUS, {
            "deployment_id": deployment_id, "device_id": device_id, "status": status})
    db.session.commit()


def _count_outcome(deployment: Deployment, number: int, status: str) -> None:
    """Count a device's final success or failure on its phase's row (an increment in SQL:
    concurrent reports each count), then check the thresholds it may have crossed: the
    phase's failure threshold pauses the deployment, a success threshold starts the next
    phase."""
    counter = DeploymentPhase.successes if status == Status.SUCCESS else DeploymentPhase.failures
    successes, failures = db.session.execute(
        update(DeploymentPhase)
        .where(DeploymentPhase.deployment_id == deployment.id, DeploymentPhase.number == number)
        .values({counter: counter + 1})
        .returning(DeploymentPhase.successes, DeploymentPhase.failures)
        .execution_options(synchronize_session=False)).one()
    phase = deployment.phases[number]
    db.session.refresh(phase)
    if status == Status.FAILURE:
        crossed = failure_threshold_crossed(phase, successes, failures)
        if crossed:
            transition(deployment, Transition.PAUSED, crossed, phase=phase, actor=SYSTEM)
    else:
        _start_phases_due(deployment)


def failure_threshold_crossed(phase: DeploymentPhase, successes: int,
                              failures: int) -> str | None:
    """Why the phase's failure threshold is crossed (over its finished devices), or None."""
    finished = successes + failures
    where = f"phase {phase.number + 1}: {failures} of {finished} finished devices failed"
    if phase.max_failures is not None and failures > phase.max_failures:
        return f"{where}, more than the {phase.max_failures} allowed"
    if phase.max_failure_percent is not None \
            and failures * 100 > phase.max_failure_percent * finished:
        return f"{where}, more than the {phase.max_failure_percent}% allowed"
    return None


def _start_phases_due(deployment: Deployment) -> None:
    """Start each phase waiting for the one before to reach its success threshold, if it
    has (not while paused: resume does it)."""
    if deployment.paused_at is not None or deployment.aborted_at is not None:
        return
    for before, phase in zip(deployment.phases, deployment.phases[1:], strict=False):
        if phase.started_at is None and phase.after_success is not None \
                and before.started_at is not None \
                and before.successes * 100 >= phase.after_success * before.size:
            transition(deployment, Transition.PHASE_STARTED,
                       f"phase {before.number + 1} reached {phase.after_success}% success "
                       f"({before.successes} of {before.size} devices)",
                       phase=phase, actor=SYSTEM)


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


# -- transitions ------------------------------------------------------------------------------


class Transition(StrEnum):
    """A change of a deployment's state; the value is its audit log action."""

    CREATED = "deployment.create"
    PHASE_STARTED = "deployment.phase_start"
    PAUSED = "deployment.pause"
    RESUMED = "deployment.resume"
    ABORTED = "deployment.abort"


SYSTEM = "system"  # the actor of what the server decides itself (a threshold, a time)
PUBLISHED_AS = {
    Transition.CREATED: events.DEPLOYMENT_CREATED,
    Transition.PHASE_STARTED: events.DEPLOYMENT_PHASE_STARTED,
    Transition.PAUSED: events.DEPLOYMENT_PAUSED,
    Transition.RESUMED: events.DEPLOYMENT_RESUMED,
    Transition.ABORTED: events.DEPLOYMENT_ABORTED,
}


def transition(deployment: Deployment, what: Transition, why: str, *,
               phase: DeploymentPhase | None = None, actor: str | None = None,
               **detail) -> bool:
    """Make one change of a deployment's state, with its audit entry and its event saying
    why; the one way any happens. Each is a conditional update (a phase not started yet, a
    deployment not paused yet...), so that of two workers deciding the same at once, one
    makes it and records it. Returns whether this call made it."""
    moment = now()
    this = Deployment.id == deployment.id
    if what is Transition.PHASE_STARTED:
        changes = update(DeploymentPhase).where(
            DeploymentPhase.deployment_id == deployment.id,
            DeploymentPhase.number == phase.number,
            DeploymentPhase.started_at.is_(None)).values(started_at=moment)
        detail["phase"] = phase.number + 1
    elif what is Transition.PAUSED:
        changes = update(Deployment).where(this, Deployment.paused_at.is_(None),
                                           Deployment.aborted_at.is_(None)).values(
            paused_at=moment, pause_reason=why)
        if phase is not None:
            detail["phase"] = phase.number + 1
    elif what is Transition.RESUMED:
        changes = update(Deployment).where(this, Deployment.paused_at.is_not(None)).values(
            paused_at=None, pause_reason=None)
    elif what is Transition.ABORTED:
        changes = update(Deployment).where(this, Deployment.aborted_at.is_(None)).values(
            aborted_at=moment)
    else:
        changes = None
    if changes is not None:
        if db.session.execute(changes.execution_options(synchronize_session=False)) \
                .rowcount != 1:
            return False
        db.session.refresh(phase if what is Transition.PHASE_STARTED else deployment)
    audit.record(what.value, deployment.id, actor, why=why, **detail)
    events.publish(PUBLISHED_AS[what], {"deployment_id": deployment.id, "why": why, **detail})
    return True


def _finished_event(device_deployment: DeviceDeployment) -> None:
    """Publish that the device finished, and that the deployment did if it was the last."""
    _device_finished_event(device_deployment)
    _deployment_finished_event_if_last(device_deployment.deployment_id)


def _device_finished_event(device_deployment: DeviceDeployment) -> None:
    events.publish(events.DEPLOYMENT_DEVICE_FINISHED, {
        "deployment_id": device_deployment.deployment_id,
        "device_id": device_deployment.device_id, "status": device_deployment.status})


def _deployment_finished_event_if_last(deployment_id: str) -> None:
    """Checked after `publish` took the events' lock: a device finishing at the same moment
    in another transaction has committed by then, so exactly one of them sees none left."""
    left = db.session.query(exists().where(DeviceDeployment.deployment_id == deployment_id,
                                           DeviceDeployment.finished_at.is_(None))).scalar()
    if not left:
        events.publish(events.DEPLOYMENT_FINISHED, {"deployment_id": deployment_id})


# -- management -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhasePlan:
    """A phase as asked for: its size (a count, a percentage of the deployment's devices,
    or None: the rest, for the last) or an inventory filter choosing its devices, how it
    starts, its failure threshold."""

    size: int | None = None
    percent: int | None = None
    start_at: datetime | None = None
    after_success: int | None = None
    on_release: bool = False
    max_failures: int | None = None
    max_failure_percent: int | None = None
    target_filter: list | None = None  # its devices: the deployment's that match


PERCENT = re.compile(r"(\d{1,3})%")
WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")
PHASE_KEYS = ("size", "filter", "start_at", "after_success", "release", "max_failures")


def parse_time(value, what: str) -> datetime:
    """An ISO 8601 time; without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{what} must be an ISO 8601 time, e.g. 2026-12-01T02:00:00Z") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_window(value: str) -> tuple[int, int]:
    """'HH:MM-HH:MM' as minutes of the day; the end may be past midnight (22:00-04:00)."""
    match = WINDOW.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(400, "window must be HH:MM-HH:MM (UTC), e.g. 22:00-04:00")
    hours, minutes, end_hours, end_minutes = map(int, match.groups())
    start, end = hours * 60 + minutes, end_hours * 60 + end_minutes
    if start == end:
        raise ApiError(400, "window must not start and end at the same time")
    return start, end


def _count_or_percent(value, what: str, low: int) -> tuple[int | None, int | None]:
    """(count, None) from an integer, (None, percent) from 'N%'."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value, None
    match = PERCENT.fullmatch(value) if isinstance(value, str) else None
    if match and low <= int(match[1]) <= 100:
        return None, int(match[1])
    raise ApiError(400, f"{what} must be an integer of at least {low} or a percentage "
                        f"'N%' ({low} to 100)")


def plan_phases(phases: list | None, max_failures=None) -> list[PhasePlan]:
    """The phases of a create request (None: one phase of every device); `max_failures`:
    the failure threshold of every phase that does not give its own."""
    default = (None, None) if max_failures is None else \
        _count_or_percent(max_failures, "max_failures", 0)
    if phases is None:
        return [PhasePlan(max_failures=default[0], max_failure_percent=default[1])]
    if not isinstance(phases, list) or not phases or len(phases) > 100:
        raise ApiError(400, "phases must be a list of 1 to 100 phase objects")
    plans = []
    for index, spec in enumerate(phases):
        where = f"phases[{index}]"
        if not isinstance(spec, dict) or set(spec) - set(PHASE_KEYS):
            raise ApiError(400, f"{where} must be an object with {', '.join(PHASE_KEYS)}")
        last = index == len(phases) - 1
        size, target_filter = spec.get("size"), spec.get("filter")
        if target_filter is not None:
            if size is not None:
                raise ApiError(400, f"{where}: a phase has a size or a filter, not both")
            dynamic_groups.check_filter(target_filter, f"{where}.filter")
            count, percent = None, None
        else:
            count, percent = (None, None) if size is None and last else \
                _count_or_percent(size, f"{where}.size", 1)
        start_at = parse_time(spec["start_at"], f"{where}.start_at") \
            if spec.get("start_at") is not None else None
        after_success = spec.get("after_success")
        if after_success is not None:
            if index == 0:
                raise ApiError(400, "phases[0] starts with the deployment: it cannot wait "
                                    "for a phase before it (after_success)")
            _, after_success = _count_or_percent(after_success, f"{where}.after_success", 1)
            if after_success is None:
                raise ApiError(400, f"{where}.after_success must be a percentage 'N%'")
        release = spec.get("release", False)
        if not isinstance(release, bool):
            raise ApiError(400, f"{where}.release must be a boolean")
        if index and sum((start_at is not None, after_success is not None, release)) != 1:
            raise ApiError(400, f"{where} must start in one way: start_at, after_success "
                                "or release")
        if index == 0 and start_at is not None and release:
            raise ApiError(400, "phases[0] starts at start_at or on release, not both")
        threshold = default if spec.get("max_failures") is None else \
            _count_or_percent(spec["max_failures"], f"{where}.max_failures", 0)
        plans.append(PhasePlan(count, percent, start_at, after_success, release, *threshold,
                               target_filter))
    return plans


def phase_sizes(plans: list[PhasePlan], total: int) -> list[int]:
    """Each phase's number of devices, adding up to `total` exactly. Percentages are of
    `total`, rounded on their running sum (so that 3 × 33% of 10 are 3, 4, 3 and never add
    up to more than they should); a last phase without a size takes the rest."""
    sizes, running_percent, percent_devices = [], 0, 0
    for plan in plans:
        if plan.percent is not None:
            running_percent += plan.percent
            upto = (total * running_percent * 2 + 100) // 200  # rounded half up
            sizes.append(upto - percent_devices)
            percent_devices = upto
        else:
            sizes.append(plan.size)
    if sizes[-1] is None:
        sizes[-1] = total - sum(sizes[:-1])
    if sum(sizes) != total:
        raise ApiError(400, f"the phases have {sum(sizes)} devices in all, the deployment "
                            f"{total}: give the last phase no size to take the rest")
    for number, size in enumerate(sizes):
        if size < 1:
            raise ApiError(400, f"phase {number + 1} would have no devices "
                                f"(of {total} in all)")
    return sizes


def split_into_phases(deployment_id: str, plans: list[PhasePlan],
                      targets: list[str]) -> list[list[str]]:
    """Each phase's devices. A phase with a filter has the targets that match it (in SQL;
    a device matching several such phases is in the first); the others share the rest in
    hash order (`phase_order`), their sizes and percentages counted over the rest and
    adding up to it exactly."""
    rest = targets
    chosen: dict[int, list[str]] = {}
    for number, plan in enumerate(plans):
        if plan.target_filter is not None:
            matching = {device for (device,) in dynamic_groups.members(plan.target_filter)} \
                & set(rest)
            if not matching:
                raise ApiError(400, f"phase {number + 1}: no device of the deployment "
                                    "matches its filter")
            chosen[number] = sorted(matching)
            rest = [device for device in rest if device not in matching]
    shared = [plan for plan in plans if plan.target_filter is None]
    if not shared:
        if rest:
            raise ApiError(400, f"{len(rest)} device(s) match no phase's filter: add a "
                                "last phase without a filter for the rest")
        return [chosen[number] for number in range(len(plans))]
    sizes = iter(phase_sizes(shared, len(rest)))
    ordered = iter(sorted(rest, key=lambda device: phase_order(deployment_id, device)))
    return [chosen[number] if number in chosen
            else [next(ordered) for _ in range(next(sizes))]
            for number in range(len(plans))]


def phase_order(deployment_id: str, device_id: str) -> str:
    """Devices are split into phases in this order: fixed for a deployment, and unrelated
    to ids, names or enrolment times (a canary is a fair sample)."""
    return hashlib.sha256(f"{deployment_id}/{device_id}".encode()).hexdigest()


def create(name: str, artifact_name: str, *, devices: list[str] | None = None,
           group: str | None = None, dynamic_group: str | None = None, fixed: bool = False,
           all_devices: bool = False, force: bool = False,
           phases: list[PhasePlan] | None = None, retries: int = 0,
           start_at: datetime | None = None,
           window: tuple[int, int] | None = None) -> Deployment:
    """Deploy to exactly one of: a device list, a static group, a dynamic group, all
    accepted devices. A deployment to a dynamic group stays open to devices that join the
    group (`add_joiners`, into its last phase) until it is aborted, unless `fixed`."""
    if sum((devices is not None, group is not None, dynamic_group is not None,
            all_devices)) != 1:
        raise ApiError(400, "give exactly one of 'devices', 'group', 'dynamic_group' or "
                            "'all_devices'")
    if fixed and dynamic_group is None:
        raise ApiError(400, "'fixed' applies to a deployment to a dynamic group only")
    if not artifacts.list_artifacts(artifact_name):
        raise ApiError(400, f"no artifact named {artifact_name!r}")
    if not 0 <= retries <= 100:
        raise ApiError(400, "retries must be from 0 to 100")
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
    plans = phases or plan_phases(None)
    if not targets and len(plans) > 1:
        raise ApiError(400, "the dynamic group has no devices yet: phases need devices to "
                            "split (deploy without phases, or when it has members)")
    deployment = Deployment(name=name, artifact_name=artifact_name, force=force,
                            retries=retries, start_at=start_at,
                            window_start=window[0] if window else None,
                            window_end=window[1] if window else None,
                            dynamic_group=dynamic_group, target_filter=target_filter,
                            open_to_joiners=open_to_joiners)
    db.session.add(deployment)
    db.session.flush()  # its id orders the devices
    # A dynamic group's deployment may wait for its first member: one empty phase.
    split = split_into_phases(deployment.id, plans, targets) if targets else [[]]
    sizes = [len(devices_of_phase) for devices_of_phase in split]
    deployment.phases = [
        DeploymentPhase(number=number, size=size,
                        start_at=plan.start_at or (start_at if number == 0 else None),
                        after_success=plan.after_success, on_release=plan.on_release,
                        max_failures=plan.max_failures,
                        max_failure_percent=plan.max_failure_percent,
                        target_filter=plan.target_filter, successes=0, failures=0)
        for number, (plan, size) in enumerate(zip(plans, sizes, strict=True))]
    deployment.devices = [DeviceDeployment(device_id=device_id, status=PENDING, phase=number)
                          for number, devices_of_phase in enumerate(split)
                          for device_id in devices_of_phase]
    db.session.flush()
    transition(deployment, Transition.CREATED, "created", name=name,
               artifact_name=artifact_name, devices=len(targets), group=group,
               dynamic_group=dynamic_group, open_to_joiners=open_to_joiners,
               all_devices=all_devices, force=force, phases=sizes, retries=retries)
    first = deployment.phases[0]
    if not first.on_release and (first.start_at is None or first.start_at <= now()):
        transition(deployment, Transition.PHASE_STARTED, "phase 1 starts with the deployment",
                   phase=first, actor=SYSTEM)
    db.session.commit()
    return deployment


def add_devices(deployment_id: str, device_ids: list[str]) -> list[str]:
    """Add devices to an open deployment (a dynamic group's new members): each joins its
    last phase, as in Mender, whose size grows; the phases before keep theirs. Devices in it
    already, or added at the same moment by another request, are skipped. Returns the ids
    added. The caller commits (after `serialize_joining`, as `add_joiners` does)."""
    deployment = get(deployment_id)
    if deployment.aborted_at is not None:
        raise ApiError(409, "deployment aborted")
    last = deployment.phases[-1]
    added = []
    for device_id in sorted(set(device_ids), key=lambda d: phase_order(deployment.id, d)):
        try:
            with db.session.begin_nested():
                db.session.add(DeviceDeployment(deployment_id=deployment.id,
                                                device_id=device_id, status=PENDING,
                                                phase=last.number))
        except IntegrityError:
            continue
        events.publish(events.DEPLOYMENT_DEVICE_ADDED,
                       {"deployment_id": deployment.id, "device_id": device_id,
                        "phase": last.number + 1})
        added.append(device_id)
    if not added:
        return []
    db.session.execute(update(DeploymentPhase).where(
        DeploymentPhase.deployment_id == deployment.id, DeploymentPhase.number == last.number)
        .values(size=DeploymentPhase.size + len(added))
        .execution_options(synchronize_session=False))
    audit.record("deployment.add_devices", deployment.id, SYSTEM, devices=len(added),
                 phase=last.number + 1)
    return added


def get(deployment_id: str) -> Deployment:
    deployment = db.session.get(Deployment, deployment_id)
    if deployment is None:
        raise ApiError(404, f"no deployment {deployment_id}")
    return deployment


def list_deployments() -> list[Deployment]:
    return db.session.query(Deployment).order_by(Deployment.created_at.desc()).all()


def _open(deployment_id: str) -> Deployment:
    deployment = get(deployment_id)
    if deployment.aborted_at is not None:
        raise ApiError(409, "deployment already aborted")
    if not deployment.open_to_joiners and all(d.finished_at is not None
                                              for d in deployment.devices):
        raise ApiError(409, "deployment already finished")
    return deployment


def abort(deployment_id: str) -> Deployment:
    """Finish the devices that have not, each with its event; a deployment open to joiners
    is closed to them (aborting is how one ends, even when every device it reached has
    finished)."""
    deployment = _open(deployment_id)
    for device_deployment in deployment.devices:
        if device_deployment.finished_at is None:
            _finish(device_deployment, Status.ABORTED)
            _device_finished_event(device_deployment)
    transition(deployment, Transition.ABORTED, "aborted by an operator")
    db.session.commit()
    return deployment


def pause(deployment_id: str, reason: str | None = None) -> Deployment:
    deployment = _open(deployment_id)
    if not transition(deployment, Transition.PAUSED, reason or "paused by an operator"):
        raise ApiError(409, "deployment already paused")
    db.session.commit()
    return deployment


def resume(deployment_id: str, artifact_name: str | None = None) -> Deployment:
    """Go on after a pause. With `artifact_name` (the fixed release): the deployment's
    artifact becomes that one for every device that has not succeeded: those not started
    get it, and those that failed are offered it as a new attempt (their failures no
    longer count against their phase's threshold)."""
    deployment = _open(deployment_id)
    if deployment.paused_at is None:
        raise ApiError(409, "deployment is not paused")
    detail = {}
    if artifact_name is not None and artifact_name != deployment.artifact_name:
        if not artifacts.list_artifacts(artifact_name):
            raise ApiError(400, f"no artifact named {artifact_name!r}")
        detail = {"artifact_name": artifact_name, "was": deployment.artifact_name,
                  "reopened": _reopen_failed(deployment)}
        deployment.artifact_name = artifact_name
    why = "resumed by an operator" + (f" with {artifact_name}" if detail else "")
    transition(deployment, Transition.RESUMED, why, **detail)
    _start_phases_due(deployment)
    db.session.commit()
    return deployment


def _reopen_failed(deployment: Deployment) -> int:
    """A new artifact: the failed devices are pending again (no longer counted as failures
    of their phases, a decrement in SQL beside the devices' own reports), and nothing
    pending keeps the artifact chosen before."""
    reopened = Counter()
    for device_deployment in deployment.devices:
        if device_deployment.status == Status.FAILURE:
            device_deployment.status, device_deployment.finished_at = PENDING, None
            reopened[device_deployment.phase] += 1
        if device_deployment.status == PENDING:
            device_deployment.artifact_id = None
    for number, count in reopened.items():
        db.session.execute(update(DeploymentPhase).where(
            DeploymentPhase.deployment_id == deployment.id, DeploymentPhase.number == number)
            .values(failures=DeploymentPhase.failures - count)
            .execution_options(synchronize_session=False))
    for phase in deployment.phases:
        db.session.refresh(phase)
    return sum(reopened.values())


def release(deployment_id: str) -> Deployment:
    """Start the first phase that has not started, whatever it waits for."""
    deployment = _open(deployment_id)
    if deployment.paused_at is not None:
        raise ApiError(409, "deployment is paused: resume it first")
    waiting = next((p for p in deployment.phases if p.started_at is None), None)
    if waiting is None:
        raise ApiError(409, "every phase has started")
    transition(deployment, Transition.PHASE_STARTED,
               f"phase {waiting.number + 1} released by an operator", phase=waiting)
    db.session.commit()
    return deployment


def end_for_decommissioned(device_id: str) -> None:
    """A device decommissioned: each deployment it has not finished ends for it, with its
    event (and the deployment's, if it was the last device)."""
    unfinished = db.session.query(DeviceDeployment).filter(
        DeviceDeployment.device_id == device_id, DeviceDeployment.finished_at.is_(None))
    for device_deployment in unfinished.order_by(DeviceDeployment.created_at):
        _finish(device_deployment, Status.DECOMMISSIONED)
        _finished_event(device_deployment)


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
    if deployment.paused_at is not None:
        return "paused"
    if any(d.status != PENDING or d.attempts for d in deployment.devices):
        return "inprogress"
    if deployment.start_at is not None and now() < deployment.start_at:
        return "scheduled"
    return PENDING


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _minutes(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def phase_view(phase: DeploymentPhase) -> dict:
    if phase.max_failures is not None:
        max_failures = phase.max_failures
    else:
        max_failures = None if phase.max_failure_percent is None \
            else f"{phase.max_failure_percent}%"
    return {
        "number": phase.number + 1,
        "size": phase.size,
        "filter": phase.target_filter,
        "start_at": _iso(phase.start_at),
        "after_success": None if phase.after_success is None else f"{phase.after_success}%",
        "release": phase.on_release,
        "max_failures": max_failures,
        "started_at": _iso(phase.started_at),
        "successes": phase.successes,
        "failures": phase.failures,
    }


def deployment_view(deployment: Deployment) -> dict:
    window = None if deployment.window_start is None else \
        f"{_minutes(deployment.window_start)}-{_minutes(deployment.window_end)}"
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
        "attempts": sum(d.attempts for d in deployment.devices),
        "retries": deployment.retries,
        "start_at": _iso(deployment.start_at),
        "window": window,
        "paused_at": _iso(deployment.paused_at),
        "pause_reason": deployment.pause_reason,
        "phases": [phase_view(phase) for phase in deployment.phases],
    }


def device_deployment_view(device_deployment: DeviceDeployment) -> dict:
    finished = device_deployment.finished_at
    return {
        "device_id": device_deployment.device_id,
        "status": device_deployment.status,
        "substate": device_deployment.substate,
        "artifact_id": device_deployment.artifact_id,
        "phase": device_deployment.phase + 1,
        "attempts": device_deployment.attempts,
        "created_at": device_deployment.created_at.isoformat(),
        "finished_at": finished.isoformat() if finished else None,
        "has_log": device_deployment.log is not None,
        "download": _download(device_deployment.log),
    }


def _download(log: list | None) -> dict | None:
    stats = downloads.download_stats(log)
    return stats.to_json() if stats else None


def outcomes_since(since: datetime) -> list[tuple[datetime, str]]:
    """(finished_at, status) of each device's deployment that ended in success or failure
    since `since`."""
    rows = db.session.query(DeviceDeployment.finished_at, DeviceDeployment.status).filter(
        DeviceDeployment.finished_at >= since,
        DeviceDeployment.status.in_((Status.SUCCESS, Status.FAILURE)))
    return [(finished_at, status) for finished_at, status in rows]


# -- devices joining a dynamic group while its deployment is open ------------------------------


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
        if matches is not None and add_devices(deployment_id, [device_id]):
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
