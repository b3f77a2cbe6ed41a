"""Deployments: create, list, live progress per phase and device, pause, resume (with a
fixed artifact), release the next phase, abort, each device's log."""
from flask import flash, redirect, render_template, request, url_for

from ..artifacts import service as artifacts
from ..auth import USER
from ..deployments import service as deployments
from ..devices import service as devices
from ..errors import ApiError
from ..events.routes import event_stream
from ..inventory import groups as dynamic_groups
from ..inventory import service as inventory
from ..validation import text
from .blueprint import blueprint, page_of


def summary(deployment) -> dict:
    """The API's view of a deployment and how many of its devices have finished."""
    view = deployments.deployment_view(deployment)
    view["finished"] = sum(view["statistics"].get(status, 0) for status in deployments.FINAL)
    return view


@blueprint.get("/deployments")
def deployment_list():
    page = page_of(deployments.list_deployments())
    return render_template("ui/deployments.html", page=page,
                           deployments=[summary(d) for d in page["items"]])


@blueprint.get("/deployments/new")
def new_deployment():
    names = sorted({a.name for a in artifacts.list_artifacts()})
    return render_template("ui/deployment_new.html", artifact_names=names,
                           chosen=request.args.get("artifact_name"), groups=inventory.groups(),
                           dynamic_groups=[dynamic_groups.group_view(g)
                                           for g in dynamic_groups.list_groups()],
                           devices=devices.list_devices(devices.ACCEPTED))


@blueprint.post("/deployments")
def create_deployment():
    form = request.form
    target = form.get("target")
    if target not in ("devices", "group", "dynamic_group", "all"):
        raise ApiError(400, "choose the devices, a group or all devices")
    dynamic = target == "dynamic_group"
    deployment = deployments.create(
        text(form, "name"), text(form, "artifact_name"),
        devices=form.getlist("devices") if target == "devices" else None,
        group=text(form, "group", max_length=100) if target == "group" else None,
        dynamic_group=text(form, "dynamic_group", max_length=100) if dynamic else None,
        fixed=dynamic and "fixed" in form, all_devices=target == "all", force="force" in form,
        **_rollout(form))
    flash(f"Deployment {deployment.name} created.", "info")
    return redirect(url_for("ui.deployment", deployment_id=deployment.id), 303)


def _count_or_percent(value: str):
    """A form's '5' as the API's 5, its '10%' as is."""
    return int(value) if value.isdigit() else value


def _rollout(form) -> dict:
    """The form's rollout fields as `deployments.create` options: a canary (a count, a
    share, or the devices matching a dynamic group's filter), then the rest after a success
    threshold or on release; a failure threshold; retries; a window."""
    canary, max_failures = form.get("canary", "").strip(), form.get("max_failures", "").strip()
    canary_group = form.get("canary_group", "").strip()
    if canary and canary_group:
        raise ApiError(400, "the canary is a number of devices or a dynamic group's, not both")
    phases = None
    if canary or canary_group:
        rest = {"release": True} if form.get("then") == "release" else \
            {"after_success": form.get("after_success", "").strip()}
        first = {"filter": dynamic_groups.get(canary_group).filter} if canary_group \
            else {"size": _count_or_percent(canary)}
        phases = [first, rest]
    retries = form.get("retries", "").strip() or "0"
    if not retries.isdigit():
        raise ApiError(400, "retries must be from 0 to 100")
    window = form.get("window", "").strip()
    return {"phases": deployments.plan_phases(phases, _count_or_percent(max_failures)
                                              if max_failures else None),
            "retries": int(retries),
            "window": deployments.parse_window(window) if window else None}


def _progress(deployment_id: str) -> dict:
    deployment = deployments.get(deployment_id)
    page = page_of(sorted(deployment.devices, key=lambda d: (d.phase, d.device_id)))
    return {"deployment": summary(deployment), "page": page,
            "devices": [deployments.device_deployment_view(d) for d in page["items"]],
            "artifact_names": sorted({a.name for a in artifacts.list_artifacts()})}


@blueprint.get("/deployments/<deployment_id>")
def deployment(deployment_id):
    return render_template("ui/deployment.html", **_progress(deployment_id))


@blueprint.get("/deployments/<deployment_id>/progress")
def deployment_progress(deployment_id):
    """The live part of the deployment page, fetched again when an event says it changed."""
    return render_template("ui/_progress.html", **_progress(deployment_id))


@blueprint.get("/deployments/<deployment_id>/events")
def deployment_events(deployment_id):
    """The deployment's events as a server-sent events stream, for its page's live part."""
    deployments.get(deployment_id)
    return event_stream(lambda event: event["data"].get("deployment_id") == deployment_id,
                        kinds=(USER,))


@blueprint.post("/deployments/<deployment_id>/abort")
def abort_deployment(deployment_id):
    deployment = deployments.abort(deployment_id)
    flash(f"Deployment {deployment.name} aborted.", "info")
    return redirect(url_for("ui.deployment", deployment_id=deployment_id), 303)


@blueprint.post("/deployments/<deployment_id>/pause")
def pause_deployment(deployment_id):
    reason = text(request.form, "reason", required=False, max_length=1000)
    deployment = deployments.pause(deployment_id, reason)
    flash(f"Deployment {deployment.name} paused.", "info")
    return redirect(url_for("ui.deployment", deployment_id=deployment_id), 303)


@blueprint.post("/deployments/<deployment_id>/resume")
def resume_deployment(deployment_id):
    """Resume; with another artifact chosen (the fixed release), see `deployments.resume`."""
    artifact_name = request.form.get("artifact_name") or None
    deployment = deployments.resume(deployment_id, artifact_name)
    flash(f"Deployment {deployment.name} resumed with {deployment.artifact_name}.", "info")
    return redirect(url_for("ui.deployment", deployment_id=deployment_id), 303)


@blueprint.post("/deployments/<deployment_id>/release")
def release_phase(deployment_id):
    deployment = deployments.release(deployment_id)
    flash(f"Deployment {deployment.name}: next phase released.", "info")
    return redirect(url_for("ui.deployment", deployment_id=deployment_id), 303)


@blueprint.get("/deployments/<deployment_id>/devices/<device_id>/log")
def device_log(deployment_id, device_id):
    return render_template("ui/log.html", deployment=deployments.get(deployment_id),
                           device_id=device_id,
                           messages=deployments.device_log(deployment_id, device_id))
