"""Artifacts: management (upload, list, show, delete, download) and the devices' signed download."""
from flask import Blueprint, Response, current_app, redirect, request, send_file

from ..auth import user_required
from ..metrics import BYTES_SERVED
from ..storage import storage
from . import service

management_api = Blueprint("artifacts", __name__, url_prefix="/api/management/v1/artifacts")
download_api = Blueprint("artifact_download", __name__,
                         url_prefix="/api/devices/v1/deployments/download")

MEDIA_TYPE = "application/vnd.mender-artifact"
DIRECT_URL_SECONDS = 3600  # a redirect is followed at once


@management_api.post("")
@user_required
def upload():
    """The body is the artifact itself, streamed (chunked or with a Content-Length)."""
    request.max_content_length = current_app.config["MAX_ARTIFACT_BYTES"]
    description = request.args.get("description", "")[:1024]
    artifact = service.upload(request.stream, description)
    return service.artifact_view(artifact), 201


@management_api.get("")
@user_required
def list_artifacts():
    return [service.artifact_view(a) for a in service.list_artifacts(request.args.get("name"))]


@management_api.get("/<artifact_id>")
@user_required
def show(artifact_id):
    return service.artifact_view(service.get(artifact_id))


@management_api.delete("/<artifact_id>")
@user_required
def delete(artifact_id):
    service.delete(artifact_id)
    return "", 204


@management_api.get("/<artifact_id>/download")
@user_required
def download(artifact_id):
    return _send(service.get(artifact_id))


@download_api.get("/<artifact_id>")
def device_download(artifact_id):
    """No token: the link's HMAC signature and expiry are the authorization (HTTP Range works)."""
    artifact = service.check_download(artifact_id, request.args.get("expire"),
                                      request.args.get("signature"))
    return _send(artifact)


def _send(artifact):
    """The bytes from the server's own directory, or a redirect to the storage's URL (S3)."""
    store = storage()
    direct = store.download_url(artifact.id, DIRECT_URL_SECONDS)
    if direct is not None:
        return redirect(direct)
    prefix = current_app.config["ACCEL_REDIRECT_PREFIX"]
    if prefix:  # nginx sends the file (and counts its bytes), Range included
        return Response(mimetype=MEDIA_TYPE,
                        headers={"X-Accel-Redirect": f"{prefix}{artifact.id}"})
    # Several ranges in one request: the whole file with a 200 (RFC 9110 lets a server ignore
    # Range), where werkzeug, which serves one range only, would refuse them with a 416.
    several_ranges = request.range is not None and len(request.range.ranges) > 1
    response = send_file(store.path(artifact.id), mimetype=MEDIA_TYPE,
                         conditional=not several_ranges,
                         download_name=f"{artifact.name}.mender", max_age=0)
    BYTES_SERVED.inc(response.content_length or 0)
    return response

