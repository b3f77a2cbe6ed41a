"""What a device checks before installing an artifact, and what it provides afterwards.

Depends, as Mender has them: the device type must be one of the artifact's;
header-level depends (`artifact_name`, `artifact_group`, ...) list the values
the device may have; payload-level depends name one value (or a list).
Clear-provides patterns use `*` for any run of characters.
"""
import re

from .errors import CompatibilityError
from .header import ArtifactHeader


def check_compatible(header: ArtifactHeader, device_type: str,
                     device_provides: dict[str, str]) -> None:
    """Raise CompatibilityError naming every unmet dependency."""
    problems = []
    if device_type not in header.device_types:
        problems.append(f"artifact (device types {header.device_types}) not compatible with "
                        f"device {device_type}")
    for key, allowed in header.depends.items():
        if device_provides.get(key) not in allowed:
            problems.append(f"artifact depends on {key} in {allowed}; the device has "
                            f"{device_provides.get(key)!r}")
    for payload in header.payloads:
        for key, wanted in payload.depends.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if device_provides.get(key) not in allowed:
                problems.append(f"payload {payload.index} depends on {key}={wanted!r}; the "
                                f"device has {device_provides.get(key)!r}")
    if problems:
        raise CompatibilityError("; ".join(problems))


def provides_after_install(current: dict[str, str], header: ArtifactHeader) -> dict[str, str]:
    """The device's provides once `header`'s artifact is committed."""
    remaining = dict(current)
    for payload in header.payloads:
        if payload.clears_provides is None:  # an artifact from before clears_artifact_provides
            remaining = {}
            continue
        patterns = [_pattern(p) for p in payload.clears_provides]
        remaining = {k: v for k, v in remaining.items()
                     if not any(p.fullmatch(k) for p in patterns)}
    return {**remaining, **header.provides}


def _pattern(glob: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")))
