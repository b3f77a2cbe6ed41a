"""Work done in a forked child, so that what it imports and allocates ends with the child
and never stays in the agent's process. The agent uses keys only to sign its auth request
(identity.ForkedSigner) and to check an artifact's signature (`verifier`); with Debian's
cryptography 38 the first key used loads its OpenSSL backend: MiB that the daemon would
hold between polls and an install at its peak (BENCHMARKS.md). `cli.main` reads the
command line and the settings file in one too (argparse and tomllib serve at start only).

Only in a process with one thread, as the device's agent is (fork copies the calling
thread alone, and a lock another thread held stays locked in the child): with more
threads (the fleet simulator's pools), `in_child` runs the function in the process.
"""
import marshal
import os
import threading
from collections.abc import Callable


def in_child(function: Callable[[], object], errors: tuple[type[Exception], ...] = (ValueError,)):
    """`function()` run in a forked child, its result (what `marshal` carries: bytes, str,
    tuples...) sent back through a pipe. An exception comes back as the first of `errors`
    it is an instance of (errors[0] if none), with its message."""
    if threading.active_count() > 1:
        return function()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        code = 1
        try:
            os.close(read_end)
            try:
                answer = (-1, function())
            except Exception as error:  # noqa: BLE001 - every failure goes back
                kinds = [index for index, kind in enumerate(errors) if isinstance(error, kind)]
                answer = (kinds[0] if kinds else 0, str(error) if kinds else
                          f"{type(error).__name__}: {error}")
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(marshal.dumps(answer))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if not data:
        raise OSError(f"the forked child ended without an answer (exit status {status})")
    error, result = marshal.loads(data)
    if error >= 0:
        raise errors[error](result)
    return result


def verifier(key_paths: list[str]) -> Callable[[bytes, bytes], str]:
    """An artifact reader's `verifier`: the manifest's signature checked with the keys of
    `key_paths` in a forked child; the key's name, or SignatureError (KeyFormatError for a
    key that cannot be used), as the reader's own check.

    A manifest and signature it has accepted are accepted again without a second child:
    the full download after an adaptive probe reads the same head, and under emulation
    each check's start (cryptography's imports, its OpenSSL backend) costs a second.
    The answer depends on those bytes and the keys alone, so it is the same answer."""
    accepted: dict[tuple[bytes, bytes], str] = {}

    def verify(manifest: bytes, signature: bytes) -> str:
        from artifact.errors import KeyFormatError, SignatureError

        def check() -> str:
            from artifact.signing import load_key_file, verify

            return verify(manifest, signature, [load_key_file(path) for path in key_paths]).name

        if (manifest, signature) not in accepted:
            accepted[manifest, signature] = in_child(
                check, (SignatureError, KeyFormatError, OSError))
        return accepted[manifest, signature]

    return verify
