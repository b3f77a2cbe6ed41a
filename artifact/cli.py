"""`tern-artifact`: write, read, validate and sign artifacts; flags follow mender-artifact's."""
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from . import signing
from .block_index import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CHUNK_SIZE,
    BlockIndex,
    IndexAnchor,
    index_anchor,
    read_index,
    verify_chunks,
)
from .block_writer import write_indexed_artifact
from .errors import ArtifactError, StructureError
from .header import ArtifactHeader
from .payloads import (
    CHECKSUM_PROVIDE,
    LEGACY_CHECKSUM_PROVIDE,
    PayloadOptions,
    Software,
    module_image,
    rootfs_image,
)
from .reader import UNSIGNED, VERIFIED, ArtifactReader
from .writer import sign_artifact, write_artifact

EXIT_INVALID = 4  # what mender-artifact returns for an invalid artifact
PROGRESS_THRESHOLD = 64 << 20
COMPRESSIONS = ["none", "gzip", "lzma", "zstd"]


def main() -> None:
    cli(prog_name="tern-artifact")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--compression", type=click.Choice(COMPRESSIONS), default=None,
              help="As mender-artifact's global flag; `write --compression` also works.")
@click.pass_context
def cli(ctx: click.Context, compression: str | None) -> None:
    """Mender Artifact (format 3) tool of Tern."""
    ctx.obj = {"compression": compression}


@cli.group()
def write() -> None:
    """Write an artifact."""


def _common_write_options(function):
    options = [
        click.option("-n", "--artifact-name", required=True, help="Name of the artifact."),
        click.option("-t", "--device-type", "device_types", multiple=True, required=True,
                     help="Compatible device type; repeat for several."),
        click.option("-o", "--output-path", type=click.Path(dir_okay=False, path_type=Path),
                     default=Path("artifact.mender"), show_default=True),
        click.option("-k", "--key", type=click.Path(exists=True, dir_okay=False),
                     help="Private key (PEM: PKCS#1, SEC1 or PKCS#8) to sign with."),
        click.option("--compression", type=click.Choice(COMPRESSIONS), default=None,
                     help="Default gzip; zstd is a Tern extension (mender-artifact 3.9 lacks it)."),
        click.option("-p", "--provides", multiple=True, metavar="KEY:VALUE"),
        click.option("-d", "--depends", multiple=True, metavar="KEY:VALUE"),
        click.option("-N", "--artifact-name-depends", multiple=True),
        click.option("-g", "--provides-group"),
        click.option("-G", "--depends-groups", multiple=True),
        click.option("-s", "--script", "scripts", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option("--clears-provides", multiple=True),
        click.option("--no-default-clears-provides", is_flag=True),
        click.option("--software-name", default=None),
        click.option("--software-version", default=None),
        click.option("--software-filesystem", default="rootfs-image", show_default=True),
        click.option("--no-default-software-version", is_flag=True),
        click.option("-v", "--version", "format_version", type=click.IntRange(3, 3), default=3,
                     help="Artifact format version; only 3 is written."),
        click.option("--no-progress", is_flag=True),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@write.command("rootfs-image")
@click.option("-f", "--file", "path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The filesystem image.")
@click.option("--no-checksum-provide", is_flag=True)
@click.option("--legacy-rootfs-image-checksum", is_flag=True)
@click.option("--block-index", is_flag=True,
              help="Also a signed block index and range-addressable chunks, for devices "
                   "that fetch only the blocks they lack (Mender clients ignore them).")
@click.option("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, show_default=True,
              help="With --block-index: bytes per hashed block.")
@click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True,
              help="With --block-index: bytes of image per compressed, fetchable chunk.")
@_common_write_options
@click.pass_context
def write_rootfs_image(ctx, path, no_checksum_provide, legacy_rootfs_image_checksum,
                       block_index, block_size, chunk_size, **options):
    """A rootfs-image artifact: one filesystem image for the inactive A/B slot."""
    checksum = None if no_checksum_provide else (
        LEGACY_CHECKSUM_PROVIDE if legacy_rootfs_image_checksum else CHECKSUM_PROVIDE)
    source = rootfs_image(path, _software(options, default_name=""), _payload_options(options),
                          checksum_provide=checksum)
    blocks = (block_size, chunk_size) if block_index else None
    _write(ctx, source, options, blocks)


@write.command("module-image")
@click.option("-T", "--type", "payload_type", required=True, help="The update module's name.")
@click.option("-f", "--file", "paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--meta-data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON object handed to the update module.")
@_common_write_options
@click.pass_context
def write_module_image(ctx, payload_type, paths, meta_data, **options):
    """A module-image artifact: files for an update module (single-file, directory, ...)."""
    payload_options = _payload_options(options)
    if meta_data is not None:
        try:
            payload_options.meta_data = json.loads(meta_data.read_bytes())
        except ValueError as error:
            raise click.BadParameter(f"{meta_data}: not JSON: {error}") from None
        if not isinstance(payload_options.meta_data, dict):
            raise click.BadParameter(f"{meta_data}: must hold a JSON object")
    source = module_image(payload_type, list(paths), _software(options, payload_type),
                          payload_options)
    _write(ctx, source, options)


@cli.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "--key", "keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Public key (PKIX PEM) to verify with; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact as JSON.")
@click.option("--no-progress", is_flag=True, expose_value=False,
              help="Accepted as mender-artifact's, for scripts; read draws no progress bar.")
def read(artifact, keys, as_json):
    """Print an artifact's header, payloads and signature status (verifying checksums)."""
    verify_keys = [signing.load_key_file(k) for k in keys]
    with _artifact_errors(), open(artifact, "rb") as stream, \
            ArtifactReader(stream, verify_keys) as reader:
        files = []
        for payload in reader.payloads():
            for file in payload.files():
                file.drain()
                files.append((payload.index, file.name, file.size,
                              reader.manifest[f"data/{payload.index:04d}/{file.name}"]))
        block_index = _block_index(stream, reader)
    document = reader.header.to_dict()
    document["block_index"] = block_index and block_index[0].describe(block_index[1])
    document["signature"] = reader.signature
    document["verified_by"] = reader.verified_by
    document["compression"] = reader.compression
    for payload in document["payloads"]:
        payload["files"] = [{"name": name, "size": size, "checksum": digest}
                            for index, name, size, digest in files if index == payload["index"]]
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(_describe(document))


@cli.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", "--key", "keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Public key (PKIX PEM); repeat for several, the first that verifies wins.")
def validate(artifact, keys):
    """Verify structure, checksums and, with keys, the signature. Exit 0 when valid."""
    verify_keys = [signing.load_key_file(k) for k in keys]
    with _artifact_errors(), open(artifact, "rb") as stream, \
            ArtifactReader(stream, verify_keys) as reader:
        if reader.signature != UNSIGNED and not verify_keys:
            raise StructureError("the artifact is signed: give a key (-k) to verify it")
        reader.validate()
        block_index = _block_index(stream, reader)
        if block_index is not None:
            verify_chunks(stream, block_index[0], reader.payload_offset, reader.compression)
    click.echo(f"Artifact file '{artifact}' validated successfully")


@cli.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-k", "--key", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output-path", type=click.Path(dir_okay=False, path_type=Path),
              help="Default: replace the artifact in place.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing signature.")
def sign(artifact, key, output_path, force):
    """Sign an existing artifact (after verifying its checksums)."""
    with _artifact_errors():
        private_key = signing.load_private_key(Path(key).read_bytes(), key)
        with _atomic_output(output_path or artifact) as out:
            sign_artifact(artifact, out, private_key, force=force)


def _write(ctx: click.Context, source, options: dict,
           blocks: tuple[int, int] | None = None) -> None:
    """Write the artifact; with `blocks` (block size, chunk size), with a block index."""
    compression = options["compression"] or ctx.obj["compression"] or "gzip"
    depends = {}
    if options["artifact_name_depends"]:
        depends["artifact_name"] = list(options["artifact_name_depends"])
    if options["depends_groups"]:
        depends["artifact_group"] = list(options["depends_groups"])
    header = ArtifactHeader(
        name=options["artifact_name"], device_types=list(options["device_types"]), payloads=[],
        group=options["provides_group"], depends=depends,
        scripts={path.name: path.read_bytes() for path in options["scripts"]})
    with _artifact_errors():
        key = None
        if options["key"]:
            key = signing.load_private_key(Path(options["key"]).read_bytes(), options["key"])
        size = sum(path.stat().st_size for path in source.paths)
        with _progress(size, options["no_progress"]) as progress, \
                _atomic_output(options["output_path"]) as out:
            if blocks is None:
                write_artifact(out, header, [source], compression=compression,
                               signing_key=key, progress=progress)
            else:  # one pass over the image where the bar expects two
                write_indexed_artifact(out, header, source, compression=compression,
                                       signing_key=key, block_size=blocks[0],
                                       chunk_size=blocks[1],
                                       progress=progress and (lambda n: progress(2 * n)))


def _block_index(stream, reader: ArtifactReader) -> tuple[BlockIndex, IndexAnchor] | None:
    """The artifact's block index, checked against the signed header, or None."""
    anchor = index_anchor(reader.header)
    return None if anchor is None else (read_index(stream, anchor), anchor)


def _software(options: dict, default_name: str) -> Software:
    version = None
    if not options["no_default_software_version"]:
        version = options["software_version"] or options["artifact_name"]
    name = options["software_name"] if options["software_name"] is not None else default_name
    return Software(filesystem=options["software_filesystem"], name=name, version=version)


def _payload_options(options: dict) -> PayloadOptions:
    return PayloadOptions(provides=_key_values(options["provides"], "--provides"),
                          depends=_key_values(options["depends"], "--depends"),
                          clears_provides=list(options["clears_provides"]),
                          default_clears=not options["no_default_clears_provides"])


def _key_values(pairs, flag: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY:VALUE", param_hint=flag)
        result[key] = value
    return result


@contextlib.contextmanager
def _artifact_errors():
    try:
        yield
    except ArtifactError as error:
        click.echo(f"tern-artifact: {error}", err=True)
        sys.exit(EXIT_INVALID)


@contextlib.contextmanager
def _atomic_output(path: Path):
    """Write to a temporary file beside `path` and rename it into place on success."""
    if str(path) == "-":
        yield sys.stdout.buffer
        return
    path = path.resolve()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


@contextlib.contextmanager
def _progress(size: int, disabled: bool):
    """A progress bar over both passes of the writer (checksum, then compress)."""
    if disabled or size < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=2 * size, label="Writing artifact", file=sys.stderr) as bar:
        yield bar.update


def _describe(document: dict) -> str:
    signature = {
        UNSIGNED: "no signature",
        VERIFIED: f"signed and verified correctly (key {document['verified_by']})",
    }.get(document["signature"], "signed but no key for verification provided; "
                                 "use -k to give one")
    depends = document["artifact_depends"]
    lines = [
        "Mender artifact:",
        f"  Name: {document['name']}",
        "  Format: mender",
        "  Version: 3",
        f"  Signature: {signature}",
        f"  Compression: {document['compression']}",
        f"  Compatible devices: {document['device_types']}",
        f"  Provides group: {document['artifact_group'] or ''}",
        f"  Depends on one of artifact(s): {depends.get('artifact_name', [])}",
        f"  Depends on one of group(s): {depends.get('artifact_group', [])}",
        f"  State scripts: {', '.join(document['state_scripts'])}",
        "",
        "Updates:",
    ]
    for payload in document["payloads"]:
        lines += [f"  {payload['index']}:", f"    Type: {payload['type']}"]
        for title, mapping in (("Provides", payload["artifact_provides"]),
                               ("Depends", payload["artifact_depends"])):
            lines.append(f"    {title}:" + ("" if mapping else " Nothing"))
            lines += [f"      {key}: {value}" for key, value in sorted(mapping.items())]
        lines.append(f"    Clears Provides: {json.dumps(payload['clears_artifact_provides'])}")
        meta = payload["meta_data"]
        lines.append("    Metadata: " + (json.dumps(meta, sort_keys=True) if meta else "Nothing"))
        lines.append("    Files:")
        for file in payload["files"]:
            lines += [f"      name:     {file['name']}", f"      size:     {file['size']}",
                      f"      checksum: {file['checksum']}"]
    index = document["block_index"]
    if index is not None:
        lines += ["", "Block index:",
                  f"  Block size: {index['block_size']}",
                  f"  Blocks: {index['block_count']}",
                  f"  Chunk size: {index['chunk_size']}",
                  f"  Chunks: {index['chunk_count']} ({index['chunk_bytes']} bytes compressed)",
                  f"  Index: format {index['format']}, {index['index_bytes']} bytes",
                  f"    Top (a hash per chunk, zlib): {index['top_bytes']} bytes, "
                  f"sha256 {index['sha256']}",
                  f"    Leaves (a hash per non-zero block): {index['leaf_bytes']} bytes, "
                  f"{index['leaves_stored']} blocks"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
