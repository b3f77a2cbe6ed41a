"""PostgreSQL's fast path for `db.read_one` (server.database): a prepared statement run by
one libpq call through psycopg. Only a server on PostgreSQL imports this, and so psycopg."""
import functools
import hashlib

from psycopg import OperationalError, errors, pq
from psycopg.adapt import PyFormat, Transformer


def first_row(connection, sql: str, values: list) -> tuple | None:
    """The first row of `sql` as a statement prepared on `connection` (on first use there),
    run by one libpq call that waits with the GIL released. psycopg's cursor takes the same
    round trip in non-blocking steps, each back in Python: about 100 us more of a poll's CPU.
    Values go and come through psycopg's own adapters."""
    name = _statement_name(sql)
    transformer = Transformer(connection)
    params = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
    result = connection.pgconn.exec_prepared(name, params)
    if _sqlstate(result) == errors.InvalidSqlStatementName.sqlstate:
        prepared = connection.pgconn.prepare(name, sql.encode())
        if prepared.status == pq.ExecStatus.COMMAND_OK:
            result = connection.pgconn.exec_prepared(name, params)
        else:
            result = prepared
    if result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message or connection.pgconn.error_message).decode(
            errors="replace").strip()
        state = _sqlstate(result)
        raise (errors.lookup(state) if state else OperationalError)(message)
    if result.ntuples == 0:
        return None
    transformer.set_pgresult(result)
    return transformer.load_row(0, tuple)


@functools.lru_cache(maxsize=32)
def _statement_name(sql: str) -> bytes:
    """A prepared statement's name, the same for the same SQL on every connection."""
    return b"tern_" + hashlib.blake2s(sql.encode(), digest_size=8).hexdigest().encode()


def _sqlstate(result) -> str | None:
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    return state and state.decode()
