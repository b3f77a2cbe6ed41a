"""Device identity and admission: auth requests, auth sets, accept / reject / preauthorize.

A device is known by its identity data; each public key it presents is an auth
set, and the auth set, not the device, is what an operator accepts or rejects.
"""
import base64
import binascii
import hashlib
import ipaddress
import json
from datetime import timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flask import current_app
from sqlalchemy import func

from .. import audit
from ..auth import DEVICE, issue_token, revoke_tokens
from ..database import db
from ..errors import ApiError
from ..events import service as events
from ..models import AuthSet, Device, utcnow
from ..validation import parse_json

PENDING, ACCEPTED, REJECTED, PREAUTHORIZED = "pending", "accepted", "rejected", "preauthorized"
STATUSES = (PENDING, ACCEPTED, REJECTED, PREAUTHORIZED)
MIN_RSA_BITS = 2048


def canonical_identity(identity) -> str:
    """The identity as stored: sorted, compact JSON, within the configured caps."""
    if not isinstance(identity, dict) or not identity:
        raise ApiError(400, "identity data must be a non-empty JSON object")
    config = current_app.config
    if len(identity) > config["MAX_IDENTITY_ATTRIBUTES"]:
        raise ApiError(400, f"identity data has more than {config['MAX_IDENTITY_ATTRIBUTES']} "
                            "attributes")
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    if len(canonical) > config["MAX_IDENTITY_BYTES"]:
        raise ApiError(400, f"identity data is longer than {config['MAX_IDENTITY_BYTES']} bytes "
                            "as JSON")
    return canonical


def identity_hash(identity_json: str) -> str:
    return hashlib.sha256(identity_json.encode()).hexdigest()


def find_device(identity_json: str) -> Device | None:
    return db.session.query(Device).filter_by(
        identity_hash=identity_hash(identity_json)).one_or_none()


def load_device_key(pem: str):
    """The device's public key (RSA >= 2048 bits, ECDSA, Ed25519) and its canonical PEM."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnicodeError):
        raise ApiError(400, "pubkey must be a PKIX PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ApiError(400, f"RSA keys need at least {MIN_RSA_BITS} bits")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
                      | ed25519.Ed25519PublicKey):
        raise ApiError(400, "pubkey must be an RSA, ECDSA or Ed25519 key")
    canonical = key.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, canonical


def verify_signature(key, signature_b64: str, body: bytes) -> None:
    """X-MEN-Signature: RSA PKCS#1 v1.5 / ECDSA (DER or raw r||s) over SHA-256, Ed25519 plain."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            half = (key.curve.key_size + 7) // 8
            if len(signature) == 2 * half:
                signature = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                                 int.from_bytes(signature[half:], "big"))
            key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, body)
    except (InvalidSignature, binascii.Error, ValueError):
        raise ApiError(401, "signature verification failed") from None


def authenticate(body: bytes, signature: str | None, source: str) -> str:
    """Handle an auth request from `source` (see `source_of`); return a device token, or
    raise 401 while not accepted."""
    request = parse_json(body, "auth request")
    if not isinstance(request, dict) or not isinstance(request.get("id_data"), str):
        raise ApiError(400, "expected {id_data: JSON string, pubkey: PEM string}")
    identity = parse_json(request["id_data"], "id_data")
    pubkey = request.get("pubkey")
    if not isinstance(pubkey, str):
        raise ApiError(400, "pubkey must be a string")
    identity_json = canonical_identity(identity)
    key, pem = load_device_key(pubkey)
    if not signature:
        raise ApiError(400, "missing X-MEN-Signature header")
    verify_signature(key, signature, body)

    device = find_device(identity_json)
    auth_set = None if device is None else next(
        (a for a in device.auth_sets if a.pubkey == pem), None)
    if auth_set is None:
        _admit_new_key(device, source)
        if device is None:
            device = Device(identity=identity_json, identity_hash=identity_hash(identity_json),
                            status=PENDING)
            db.session.add(device)
        auth_set = AuthSet(pubkey=pem, status=PENDING, source=source)
        device.auth_sets.append(auth_set)
    was = device.status
    if auth_set.status == PREAUTHORIZED:
        _accept(device, auth_set)
        revoke_tokens(device.id, keep_auth_set=auth_set.id)
    device.status = _device_status(device)
    _accepted_now(device, was)
    if auth_set.status != ACCEPTED:
        db.session.commit()
        raise ApiError(401, f"device {auth_set.status}: not accepted yet" if
                       auth_set.status == PENDING else f"device {auth_set.status}")
    token, _ = issue_token(DEVICE, device.id, current_app.config["DEVICE_TOKEN_SECONDS"],
                           auth_set_id=auth_set.id)
    db.session.commit()
    return token


def source_of(address: str | None) -> str:
    """What the rate limit counts new keys by: an IPv4 address, or an IPv6 address's /64
    (one host commonly has a whole /64 to pick from)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip if isinstance(ip, ipaddress.IPv4Address) else ip.ipv4_mapped)


def _admit_new_key(device: Device | None, source: str) -> None:
    """Refuse a key (of `device`, or of a new device when None) that an unauthenticated
    request may not add: beyond the device's pending keys, its source's rate or the
    pending devices' cap. Counted in the database, which every instance shares."""
    config = current_app.config
    if device is not None:
        pending = sum(a.status == PENDING for a in device.auth_sets)
        if pending >= config["MAX_PENDING_KEYS_PER_DEVICE"]:
            raise ApiError(409, f"this device has {pending} keys awaiting a decision; an "
                                "operator must accept or reject them first")
    window = config["NEW_KEYS_WINDOW_SECONDS"]
    recent = db.session.query(func.count()).select_from(AuthSet).filter(
        AuthSet.source == source,
        AuthSet.created_at > utcnow() - timedelta(seconds=window)).scalar()
    if recent >= config["NEW_KEYS_PER_SOURCE"]:
        raise ApiError(429, f"too many new keys from {source}; retry later",
                       retry_after=window)
    if device is None:
        pending_devices = db.session.query(func.count()).select_from(Device).filter(
            Device.status == PENDING).scalar()
        if pending_devices >= config["MAX_PENDING_DEVICES"]:
            raise ApiError(503, "too many devices are awaiting admission; retry later",
                           retry_after=window)


def _device_status(device: Device) -> str:
    statuses = {a.status for a in device.auth_sets}
    for status in (ACCEPTED, PREAUTHORIZED, PENDING):
        if status in statuses:
            return status
    return REJECTED


def _accept(device: Device, auth_set: AuthSet) -> None:
    """One accepted key per device: accepting another rejects the one before."""
    for other in device.auth_sets:
        if other is not auth_set and other.status == ACCEPTED:
            other.status = REJECTED
    auth_set.status = ACCEPTED


# -- management ------------------------------------------------------------------------------


def get_device(device_id: str) -> Device:
    device = db.session.get(Device, device_id)
    if device is None:
        raise ApiError(404, f"no device {device_id}")
    return device


def key_fingerprint(pem: str) -> str:
    """SHA-256 of the key's DER, hex: what `openssl pkey -pubin -outform der | sha256sum`
    prints from the device's key, for an operator telling two keys of a device apart."""
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    return hashlib.sha256(der).hexdigest()


def device_view(device: Device) -> dict:
    return {
        "id": device.id,
        "identity_data": json.loads(device.identity),
        "status": device.status,
        "group": device.group_name,
        "created_at": device.created_at.isoformat(),
        "updated_at": device.updated_at.isoformat(),
        "auth_sets": [{"id": a.id, "pubkey": a.pubkey, "fingerprint": key_fingerprint(a.pubkey),
                       "status": a.status, "source": a.source,
                       "created_at": a.created_at.isoformat()} for a in device.auth_sets],
        "attributes": [{"name": a.name, "value": a.value, "description": a.description}
                       for a in device.attributes],
    }


def set_status(device_id: str, status: str, auth_id: str | None = None) -> Device:
    """Accept or reject one auth set; without `auth_id`, accept the device's one key not
    rejected (refused when there are more: which one is the device's own is the operator's
    call) or reject all of them. Only the accepted key's tokens stay valid."""
    if status not in (ACCEPTED, REJECTED):
        raise ApiError(400, "status must be 'accepted' or 'rejected'")
    device = get_device(device_id)
    if auth_id is not None:
        chosen = [a for a in device.auth_sets if a.id == auth_id]
        if not chosen:
            raise ApiError(404, f"device {device_id} has no auth set {auth_id}")
    elif status == ACCEPTED:
        chosen = [_only_key(device)]
    else:
        chosen = [a for a in device.auth_sets if a.status != REJECTED]
    if status == ACCEPTED:
        _accept(device, chosen[0])
    else:
        for auth_set in chosen:
            auth_set.status = REJECTED
    accepted = next((a.id for a in device.auth_sets if a.status == ACCEPTED), None)
    revoke_tokens(device.id, keep_auth_set=accepted)
    was, device.status = device.status, _device_status(device)
    audit.record(f"device.{'accept' if status == ACCEPTED else 'reject'}", device.id,
                 auth_sets=[a.id for a in chosen])
    _accepted_now(device, was)
    db.session.commit()
    return device


def _accepted_now(device: Device, was: str | None) -> None:
    """When a device becomes accepted: the event, and the open deployments to dynamic
    groups it matches."""
    if device.status != ACCEPTED or was == ACCEPTED:
        return
    # imported here: deployments import this module (for ACCEPTED)
    from ..deployments.service import add_joiners, serialize_joining

    db.session.flush()
    serialize_joining()  # before the events' lock, as everywhere
    events.publish(events.DEVICE_ACCEPTED, {"device_id": device.id})
    add_joiners(device.id)


def _only_key(device: Device) -> AuthSet:
    """The key an accept without `auth_id` means: the one not rejected, or the only one."""
    candidates = [a for a in device.auth_sets if a.status != REJECTED] or device.auth_sets
    if len(candidates) != 1:
        raise ApiError(409, f"device {device.id} has {len(candidates)} keys to choose from "
                            f"(auth sets {', '.join(a.id for a in candidates)}): accept one "
                            "by its auth_id")
    return candidates[0]


def preauthorize(identity, pubkey: str) -> Device:
    identity_json = canonical_identity(identity)
    _, pem = load_device_key(pubkey)
    device = find_device(identity_json)
    if device is None:
        device = Device(identity=identity_json, identity_hash=identity_hash(identity_json),
                        status=PREAUTHORIZED)
        db.session.add(device)
    elif any(a.pubkey == pem for a in device.auth_sets):
        raise ApiError(409, "this device already has an auth set with that key")
    device.auth_sets.append(AuthSet(pubkey=pem, status=PREAUTHORIZED))
    device.status = _device_status(device)
    db.session.flush()
    audit.record("device.preauthorize", device.id, identity_data=identity)
    db.session.commit()
    return device


def revoke_device_tokens(device_id: str) -> int:
    get_device(device_id)
    count = revoke_tokens(device_id)
    audit.record("device.revoke_tokens", device_id, count=count)
    db.session.commit()
    return count


def decommission(device_id: str) -> None:
    """Forget the device: tokens revoked, inventory and auth sets deleted, its open
    deployments ended for it (each with its event), and its own event."""
    # imported here: deployments import this module (for ACCEPTED)
    from ..deployments.service import end_for_decommissioned

    device = get_device(device_id)
    revoke_tokens(device.id)
    end_for_decommissioned(device.id)
    db.session.delete(device)
    audit.record("device.decommission", device_id)
    events.publish(events.DEVICE_DECOMMISSIONED, {"device_id": device_id})
    db.session.commit()


def list_devices(status: str | None = None, group: str | None = None,
                 attributes: dict[str, str] | None = None) -> list[Device]:
    """Devices by status, group and inventory attributes (equal, or one of a list's values).

    The attribute match runs in Python over the status/group selection: simple and
    the same on SQLite and PostgreSQL, fine for fleets of thousands.
    """
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(STATUSES)}")
    query = db.session.query(Device).order_by(Device.created_at, Device.id)
    if status is not None:
        query = query.filter(Device.status == status)
    if group is not None:
        query = query.filter(Device.group_name == group)
    devices = query.all()
    for name, wanted in (attributes or {}).items():
        devices = [d for d in devices if _has_attribute(d, name, wanted)]
    return devices


def awaiting_decision(group: str | None = None) -> list[Device]:
    """Devices with a key awaiting a decision: new ones, and known ones presenting another
    key (a new key of the device, or someone else claiming its identity)."""
    query = (db.session.query(Device).filter(Device.auth_sets.any(AuthSet.status == PENDING))
             .order_by(Device.created_at, Device.id))
    if group is not None:
        query = query.filter(Device.group_name == group)
    return query.all()


def _has_attribute(device: Device, name: str, wanted: str) -> bool:
    for attribute in device.attributes:
        if attribute.name == name:
            value = attribute.value
            return value == wanted or (isinstance(value, list) and wanted in value)
    return False


def count_by_status() -> dict[str, int]:
    """How many devices have each admission status (zero included)."""
    rows = db.session.query(Device.status, func.count()).group_by(Device.status)
    return {**dict.fromkeys(STATUSES, 0), **dict(rows.all())}
