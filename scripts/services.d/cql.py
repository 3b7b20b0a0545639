#!/usr/bin/env python3
"""A tiny CQL client (native protocol v4, no driver needed) for scripts/services.

    python3 scripts/services.d/cql.py [--host H] [--port P] [--timeout S] [STATEMENT ...]

Connects, sends OPTIONS (expects SUPPORTED) and STARTUP (expects READY), reads
`release_version` from system.local, prints it, then runs each STATEMENT in order and prints
one line per statement (`ok`, `rows N` or the server's error). Exit codes: 0 all good,
1 the server answered with an error, 2 no (valid) answer at all (not up yet, wrong port).
Only for probes and setup statements: values other than text are not decoded.
"""
import argparse
import socket
import struct
import sys

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_OPTIONS, OP_SUPPORTED = 0x00, 0x01, 0x02, 0x05, 0x06
OP_QUERY, OP_RESULT = 0x07, 0x08
CONSISTENCY_ONE = 0x0001
TEXT_TYPES = (0x0001, 0x000A, 0x000D)  # ascii, text, varchar


class CqlError(Exception):
    """The server answered with an ERROR frame."""


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.stream = 0

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf += chunk
        return buf

    def request(self, opcode, body=b""):
        self.stream = (self.stream + 1) % 32768
        self.sock.sendall(struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body)) + body)
        while True:
            version, _flags, stream, op, length = struct.unpack(">BBhBi", self._recv_exact(9))
            payload = self._recv_exact(length)
            if version & 0x7F != VERSION or not version & 0x80:
                raise ConnectionError(f"unexpected protocol version byte 0x{version:02x}")
            if stream != self.stream:
                continue  # an event or a stale answer: not ours
            if op == OP_ERROR:
                code = struct.unpack(">i", payload[:4])[0]
                raise CqlError(f"error 0x{code:04x}: {read_string(payload, 4)[0]}")
            return op, payload


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def read_string(buf, pos):
    (n,) = struct.unpack(">H", buf[pos : pos + 2])
    return buf[pos + 2 : pos + 2 + n].decode(errors="replace"), pos + 2 + n


def skip_type(buf, pos):
    (tid,) = struct.unpack(">H", buf[pos : pos + 2])
    pos += 2
    if tid == 0x0000:  # custom
        return tid, read_string(buf, pos)[1]
    if tid in (0x0020, 0x0022):  # list, set
        return tid, skip_type(buf, pos)[1]
    if tid == 0x0021:  # map
        return tid, skip_type(buf, skip_type(buf, pos)[1])[1]
    if tid in (0x0030, 0x0031):
        raise ValueError("udt/tuple columns are not supported by this probe")
    return tid, pos


def parse_rows(buf):
    """Rows result (after the kind int): returns [(name, type_id)], [[bytes|None]]."""
    flags, ncols = struct.unpack(">ii", buf[:8])
    pos = 8
    if flags & 0x0002:  # has_more_pages: paging state
        (n,) = struct.unpack(">i", buf[pos : pos + 4])
        pos += 4 + max(n, 0)
    cols = []
    if not flags & 0x0004:  # metadata present
        if flags & 0x0001:  # global table spec
            pos = read_string(buf, read_string(buf, pos)[1])[1]
        for _ in range(ncols):
            if not flags & 0x0001:
                pos = read_string(buf, read_string(buf, pos)[1])[1]
            name, pos = read_string(buf, pos)
            tid, pos = skip_type(buf, pos)
            cols.append((name, tid))
    (nrows,) = struct.unpack(">i", buf[pos : pos + 4])
    pos += 4
    rows = []
    for _ in range(nrows):
        row = []
        for _ in range(ncols):
            (n,) = struct.unpack(">i", buf[pos : pos + 4])
            pos += 4
            row.append(None if n < 0 else buf[pos : pos + n])
            pos += max(n, 0)
        rows.append(row)
    return cols, rows


def query(conn, cql):
    body = long_string(cql) + struct.pack(">HB", CONSISTENCY_ONE, 0)
    op, payload = conn.request(OP_QUERY, body)
    if op != OP_RESULT:
        raise ConnectionError(f"expected RESULT, got opcode 0x{op:02x}")
    (kind,) = struct.unpack(">i", payload[:4])
    if kind == 0x0002:
        return parse_rows(payload[4:])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=19042)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per socket operation")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    ap.add_argument("statements", nargs="*")
    args = ap.parse_args()
    try:
        conn = Conn(args.host, args.port, args.timeout)
        op, _ = conn.request(OP_OPTIONS)
        if op != OP_SUPPORTED:
            raise ConnectionError(f"expected SUPPORTED, got opcode 0x{op:02x}")
        startup = struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")
        op, _ = conn.request(OP_STARTUP, startup)
        if op != OP_READY:
            raise ConnectionError(f"expected READY, got opcode 0x{op:02x} (authentication on?)")
        _, rows = query(conn, "SELECT release_version FROM system.local")
        if not args.quiet:
            print(f"cql {args.host}:{args.port} ready, release_version {rows[0][0].decode()}")
    except CqlError as e:
        print(f"cql {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, struct.error, ValueError, IndexError) as e:
        print(f"cql {args.host}:{args.port}: no answer: {e}", file=sys.stderr)
        return 2
    status = 0
    for cql in args.statements:
        try:
            result = query(conn, cql)
        except CqlError as e:
            print(f"{e}  <- {cql}")
            status = 1
            continue
        if result is None:
            print("ok")
        else:
            cols, rows = result
            print(f"rows {len(rows)}")
            for row in rows:
                cells = []
                for (name, tid), cell in zip(cols, row):
                    if cell is None:
                        value = "null"
                    elif tid in TEXT_TYPES:
                        value = cell.decode(errors="replace")
                    else:
                        value = "0x" + cell.hex()
                    cells.append(f"{name}={value}")
                print("  " + " ".join(cells))
    return status


if __name__ == "__main__":
    sys.exit(main())
