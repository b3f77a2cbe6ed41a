"""Artifacts: the list, an upload streamed from the browser (with its progress), details."""
from flask import flash, redirect, render_template, request, url_for

from ..artifacts import service as artifacts
from ..artifacts.keys import trusted_keys
from .blueprint import blueprint


@blueprint.get("/artifacts")
def artifact_list():
    return render_template("ui/artifacts.html", verify_keys=trusted_keys(), artifacts=[
        artifacts.artifact_view(a) for a in artifacts.list_artifacts()])


@blueprint.post("/artifacts")
def upload_artifact():
    """The body is the artifact file itself, sent by the page's XHR (which shows the progress)."""
    artifact = artifacts.upload(request.stream, request.args.get("description", "")[:1024])
    flash(f"Artifact {artifact.name} uploaded.", "info")
    return {"id": artifact.id, "name": artifact.name,
            "url": url_for("ui.artifact", artifact_id=artifact.id)}, 201


@blueprint.get("/artifacts/<artifact_id>")
def artifact(artifact_id):
    return render_template("ui/artifact.html",
                           artifact=artifacts.artifact_view(artifacts.get(artifact_id)))


@blueprint.post("/artifacts/<artifact_id>/delete")
def delete_artifact(artifact_id):
    name = artifacts.get(artifact_id).name
    artifacts.delete(artifact_id)
    flash(f"Artifact {name} deleted.", "info")
    return redirect(url_for("ui.artifact_list"), 303)
