#!/usr/bin/python3
"""An unprivileged client that misuses the relay's whole-switch replies, speaking the D-Bus
wire protocol on a raw socket (no library answers or reads anything behind its back).

    flood.py never-read ADDRESS C N C connections, each asking for N GetManagedObjects a
                                    second apart (more at once the relay refuses), none
                                    reading; prints "sent" and waits until stdin closes
    flood.py read ADDRESS N         N connections, one GetManagedObjects each, all at once;
                                    reads every reply and prints a JSON summary

ADDRESS is unix:path=... as dbus-daemon prints it.
"""

import json
import os
import selectors
import socket
import struct
import sys
import time

RELAY = "org.ovsdbus.Relay1"
RELAY_PATH = "/org/ovsdbus/Relay1"
BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
METHOD_RETURN, ERROR = 2, 3
ERROR_NAME_FIELD = 4


def pad(data, align):
    return data + b"\0" * (-len(data) % align)


def method_call(serial, path, interface, member, destination):
    """A little-endian METHOD_CALL without a body."""
    fields = b""
    for code, sig, value in [(1, b"o", path), (2, b"s", interface), (3, b"s", member),
                             (6, b"s", destination)]:
        text = value.encode()
        field = struct.pack("<B", code) + bytes([1]) + sig + b"\0"
        field = pad(field, 4) + struct.pack("<I", len(text)) + text + b"\0"
        fields = pad(fields, 8) + field
    header = b"l" + bytes([1, 0, 1]) + struct.pack("<III", 0, serial, len(fields))
    return pad(header + fields, 8)


def connect(address):
    path = address.split("unix:path=", 1)[1].split(",", 1)[0]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    uid = str(os.getuid()).encode().hex().encode()
    sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            sys.exit("the bus closed the connection during authentication")
        reply += chunk
    if not reply.startswith(b"OK "):
        sys.exit(f"authentication refused: {reply!r}")
    sock.sendall(b"BEGIN\r\n" + method_call(1, BUS_PATH, BUS, "Hello", BUS))
    return sock


def get_managed_objects(serial):
    return method_call(serial, RELAY_PATH, "org.freedesktop.DBus.ObjectManager",
                       "GetManagedObjects", RELAY)


class Reader:
    """Splits one connection's byte stream into messages: (type, error name, size)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 16:
            body_len, _, fields_len = struct.unpack_from("<III", self.buf, 4)
            start = 16 + fields_len + (-(16 + fields_len) % 8)
            size = start + body_len
            if len(self.buf) < size:
                return
            yield self.buf[1], error_name(self.buf, fields_len), size
            del self.buf[:size]


def error_name(buf, fields_len):
    pos, end = 16, 16 + fields_len
    while pos < end:
        pos += -pos % 8
        code, sig_len = buf[pos], buf[pos + 1]
        sig = bytes(buf[pos + 2:pos + 2 + sig_len])
        pos += 3 + sig_len
        if sig in (b"s", b"o"):
            pos += -pos % 4
            (length,) = struct.unpack_from("<I", buf, pos)
            text = bytes(buf[pos + 4:pos + 4 + length]).decode()
            pos += 4 + length + 1
            if code == ERROR_NAME_FIELD:
                return text
        elif sig == b"u":
            pos += -pos % 4 + 4
        elif sig == b"g":
            pos += 1 + buf[pos] + 1
        else:
            return None
    return None


def never_read(address, connections, calls):
    socks = [connect(address) for _ in range(connections)]
    for serial in range(2, 2 + calls):
        for sock in socks:
            sock.sendall(get_managed_objects(serial))
        time.sleep(1)
    print("sent", flush=True)
    sys.stdin.read()


def read_all(address, calls):
    sel = selectors.DefaultSelector()
    for _ in range(calls):
        sock = connect(address)
        sel.register(sock, selectors.EVENT_READ, Reader())
    # Every call leaves before any reply is read.
    for key in list(sel.get_map().values()):
        key.fileobj.sendall(get_managed_objects(2))
    summary = {"answered": 0, "errors": {}, "largest": 0}
    # The first METHOD_RETURN on each connection answers Hello; the second ours.
    returns = {}
    while sel.get_map():
        for key, _ in sel.select():
            sock, reader = key.fileobj, key.data
            data = sock.recv(1 << 20)
            if not data:
                sys.exit("the bus closed a connection before its reply")
            for kind, name, size in reader.feed(data):
                if kind not in (METHOD_RETURN, ERROR):
                    continue
                seen = returns.get(sock, 0) + 1
                returns[sock] = seen
                if seen == 1:
                    continue
                if kind == METHOD_RETURN:
                    summary["answered"] += 1
                    summary["largest"] = max(summary["largest"], size)
                else:
                    summary["errors"][name] = summary["errors"].get(name, 0) + 1
                sel.unregister(sock)
                sock.close()
                break
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    mode, address, counts = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]]
    {"never-read": never_read, "read": read_all}[mode](address, *counts)
