#!/usr/bin/python3
"""Print every InterfaceChanged signal for the interfaces of one bridge.

    examples/watch-bridge.py BRIDGE [COUNT]

BRIDGE is matched by the bus daemon (arg1 of the signal), so other bridges' traffic never
reaches this process. Each line shows the interface, the signal's seq and the changed
columns with their new values, e.g.

    tap3 seq=42 changed={"link_state": ["up"]}

COUNT: exit after that many signals (default: run until Ctrl-C).
OVS_DBUS_RELAY_BUS: system (default), session, or a D-Bus address.
Needs the Debian packages python3-dbus and python3-gi.
"""

import json
import os
import signal
import sys

import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

RELAY = "org.ovsdbus.Relay1"
ROOT = "/org/ovsdbus/Relay1"


def plain(value):
    """dbus-python values (dbus.Int64, dbus.Array, ...) as plain Python values."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Dictionary, dict)):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Array, dbus.Struct, list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (dbus.String, dbus.ObjectPath, dbus.Signature, str)):
        return str(value)
    if isinstance(value, float):
        return float(value)
    return int(value)


def connect(spec):
    if spec == "system":
        return dbus.SystemBus()
    if spec == "session":
        return dbus.SessionBus()
    return dbus.bus.BusConnection(spec)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip())
    bridge = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 0

    DBusGMainLoop(set_as_default=True)
    spec = os.environ.get("OVS_DBUS_RELAY_BUS", "system")
    try:
        bus = connect(spec)
    except dbus.DBusException as e:
        print(f"watch-bridge.py: cannot connect to the {spec} bus: {e}", file=sys.stderr)
        sys.exit(2)
    loop = GLib.MainLoop()
    seen = 0

    def on_changed(name, _bridge, _uuid, changed, _old, meta):
        nonlocal seen
        columns = json.dumps(plain(changed), sort_keys=True)
        print(f"{name} seq={int(meta['seq'])} changed={columns}", flush=True)
        seen += 1
        if count and seen >= count:
            loop.quit()

    bus.add_signal_receiver(
        on_changed,
        signal_name="InterfaceChanged",
        dbus_interface=RELAY,
        bus_name=RELAY,
        path=ROOT,
        arg1=bridge,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"watch-bridge.py: watching interfaces of {bridge}", file=sys.stderr, flush=True)
    loop.run()


if __name__ == "__main__":
    main()
