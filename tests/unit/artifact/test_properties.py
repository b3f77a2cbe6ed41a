"""Property-based tests: round trips, and corruption that never passes as a good artifact."""
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifact import ArtifactError, ArtifactReader

file_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1,
                     max_size=40).filter(lambda n: n not in (".", ".."))
keys_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)
values_text = st.text(min_size=0, max_size=30)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(file_names, st.binary(max_size=3000), max_size=4),
       compression=st.sampled_from(["none", "gzip", "lzma", "zstd"]),
       provides=st.dictionaries(keys_text, values_text, max_size=3),
       depends=st.dictionaries(keys_text, values_text, max_size=3),
       name=st.text(min_size=1, max_size=30), module_type=keys_text)
def test_module_round_trip(artifact_bytes, read_artifact, files, compression, provides, depends,
                           name, module_type):
    data = artifact_bytes(files, name=name, compression=compression, module_type=module_type,
                         provides=provides, depends=depends)
    reader, contents = read_artifact(data)
    assert contents == {(0, file_name): content for file_name, content in files.items()}
    payload = reader.header.payloads[0]
    assert reader.header.name == name
    assert payload.type == module_type
    assert payload.depends == depends
    assert {k: payload.provides[k] for k in provides} == provides


@pytest.fixture(scope="module")
def signed_artifact(tmp_path_factory, keys):
    """One small signed artifact per compression, and what reading it gives."""
    from artifact.header import ArtifactHeader
    from artifact.payloads import PayloadOptions, Software, module_image
    from artifact.signing import load_key_file
    from artifact.writer import write_artifact

    directory = tmp_path_factory.mktemp("signed")
    files = []
    for name, content in {"a.bin": bytes(range(256)) * 8, "b.txt": b"hello\n"}.items():
        (directory / name).write_bytes(content)
        files.append(directory / name)
    verify = [load_key_file(keys["ecdsa"].public_path)]
    artifacts = {}
    for compression in ("none", "gzip"):
        out = io.BytesIO()
        source = module_image("single-file", files, Software(name="single-file", version="v1"),
                              PayloadOptions(meta_data={"k": "v"}))
        header = ArtifactHeader(name="v1", device_types=["qemu-arm64"], payloads=[])
        write_artifact(out, header, [source], compression=compression,
                       signing_key=keys["ecdsa"].private_key)
        artifacts[compression] = (out.getvalue(), read_view(out.getvalue(), verify))
    return artifacts, verify


def read_view(data: bytes, verify_keys):
    with ArtifactReader(io.BytesIO(data), verify_keys) as reader:
        contents = {}
        for payload in reader.payloads():
            for file in payload.files():
                contents[(payload.index, file.name)] = b"".join(file)
    return reader.header.to_dict(), reader.manifest, contents


@settings(max_examples=300, deadline=None)
@given(data=st.data(), compression=st.sampled_from(["none", "gzip"]))
def test_corruption_never_passes_as_good(signed_artifact, data, compression):
    """Any damage either raises one of the library's errors or changes nothing signed."""
    artifacts, verify = signed_artifact
    original, good_view = artifacts[compression]
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        offset = data.draw(st.integers(0, len(damaged) - 1), label="offset")
        damaged[offset] ^= data.draw(st.integers(1, 255), label="xor")
    if data.draw(st.booleans(), label="truncate"):
        damaged = damaged[:data.draw(st.integers(0, len(damaged)), label="length")]
    try:
        view = read_view(bytes(damaged), verify)
    except ArtifactError:
        return
    assert view == good_view
