"""tern-fleet: many simulated devices, each running the real updater, against a server."""
import asyncio
import json
import random
import sys
from pathlib import Path

import click

from artifact import ArtifactReader

from .device import Settings
from .management import Management, ManagementError
from .simulator import ADMISSIONS, SCENARIOS, Fleet, FleetError, Options, failed, summary_table


def artifact_name_of(path: Path) -> str:
    with open(path, "rb") as stream, ArtifactReader(stream) as reader:
        return reader.header.name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Simulated devices (the real updater on files) for load, failure and power-cut runs."""


@main.command()
@click.option("--server", "server_url", envvar="TERN_SERVER", required=True,
              help="The server's URL (env TERN_SERVER).")
@click.option("--ca-cert", envvar="TERN_CA_CERT", default="",
              type=click.Path(exists=True, dir_okay=False),
              help="CA certificate the devices trust for the server (env TERN_CA_CERT).")
@click.option("--token", envvar="TERN_TOKEN", default="",
              help="A user's API token for admission and deployments (env TERN_TOKEN).")
@click.option("--devices", "count", type=click.IntRange(1), default=10, show_default=True)
@click.option("--scenario", type=click.Choice(SCENARIOS), default="update", show_default=True)
@click.option("--admission", type=click.Choice(ADMISSIONS), default="preauthorize",
              show_default=True, help="Preauthorize the devices' keys, accept their "
                                      "requests, or leave them pending.")
@click.option("--polls", type=click.IntRange(1), default=3, show_default=True,
              help="poll: polls per device.")
@click.option("--artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="update: upload this artifact (if the server has it, fine) and deploy it.")
@click.option("--artifact-name", help="update: deploy this artifact name "
                                      "(default: --artifact's).")
@click.option("--deployment", "deployment_id",
              help="update: run an existing deployment instead of creating one.")
@click.option("--deploy-to", type=click.Choice(("fleet", "all")), default="fleet",
              show_default=True, help="The new deployment's devices: this fleet's, or every "
                                      "accepted device (QEMU devices beside, say).")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of devices whose new slot fails to boot or its health check.")
@click.option("--transient-fail-rate", type=click.FloatRange(0, 1), default=0.0,
              show_default=True, help="Share of devices whose new slot fails its health "
                                      "check the first time only (a retry succeeds).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, show_default=True,
              help="update: attempts a device may make after a failed one (the new "
                   "deployment's).")
@click.option("--phases", "phases_json", metavar="JSON",
              help="update: the new deployment's phases, as the management API takes them, "
                   "e.g. '[{\"size\": \"5%\"}, {\"after_success\": \"50%\"}]'.")
@click.option("--until-paused", is_flag=True,
              help="update: end once the deployment is paused (a phase's failure threshold) "
                   "and no device is in the middle of an update; the others wait.")
@click.option("--power-cut-rate", type=click.FloatRange(0, 1), default=0.0,
              show_default=True, help="Share of devices that lose power at a random state.")
@click.option("--delta-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of devices that install an artifact with a block index "
                   "adaptively (they announce delta_update and write their slot files); "
                   "the others take the full payload.")
@click.option("--factory-image", type=click.Path(exists=True, dir_okay=False),
              help="What slot A holds from the factory (an adaptive install takes the "
                   "blocks it has); default: a line with the release's name.")
@click.option("--payload", type=click.Choice(("discard", "write")), default="discard",
              show_default=True, help="Write the payload into the slot file, or verify "
                                      "(checksum, signature) and discard it.")
@click.option("--verify-key", "verify_keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Public key artifacts must be signed with (repeatable).")
@click.option("--device-type", default="tern-simulated", show_default=True)
@click.option("--poll-interval", type=click.FloatRange(0.01), default=5.0, show_default=True)
@click.option("--retry-interval", type=click.FloatRange(0.01), default=5.0, show_default=True)
@click.option("--threads", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Worker threads: requests and steps in flight at once.")
@click.option("--seed", type=int, help="For the random choices (faults, start times).")
@click.option("--fleet-id", type=click.IntRange(0, 255), default=lambda: random.randrange(256),
              help="In the devices' MACs (02:ID:...), so that fleets differ  [default: random]")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the devices' directories go (default: a new temporary one).")
@click.option("--timeout", type=click.FloatRange(1), default=3600.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
def run(server_url, ca_cert, token, count, scenario, admission, polls, artifact,
        artifact_name, deployment_id, deploy_to, fail_rate, transient_fail_rate, retries,
        phases_json, until_paused, power_cut_rate, delta_rate, factory_image, payload,
        verify_keys, device_type, poll_interval, retry_interval, threads, seed, fleet_id,
        workdir, timeout, as_json) -> None:
    """Run N simulated devices through a scenario; exit 1 if any device went wrong."""
    if scenario == "update":
        if not verify_keys:
            raise click.UsageError("update: give the artifact's --verify-key (the devices "
                                   "check its signature)")
        if artifact and not artifact_name:
            artifact_name = artifact_name_of(artifact)
        if not (artifact_name or deployment_id):
            raise click.UsageError("update: give --artifact, --artifact-name or --deployment")
    try:
        phases = json.loads(phases_json) if phases_json else None
    except ValueError as error:
        raise click.UsageError(f"--phases: {error}") from None
    settings = Settings(server_url, ca_cert, tuple(verify_keys), device_type, payload,
                        factory_image or "", poll_interval, retry_interval, fleet_id=fleet_id)
    management = Management(server_url, token, ca_cert) if token else None
    options = Options(count, scenario, admission, threads, polls, artifact, artifact_name,
                      deployment_id, deploy_to, fail_rate, transient_fail_rate,
                      power_cut_rate, delta_rate, retries, phases, until_paused, seed,
                      workdir, timeout, progress=sys.stderr.isatty())
    try:
        report = asyncio.run(Fleet(settings, management, options).run())
    except (ValueError, ManagementError, FleetError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(summary_table(report))
    sys.exit(1 if failed(report) else 0)
