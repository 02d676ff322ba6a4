#!/bin/sh
# The same as wait-for-tap.sh with nothing but `busctl` (systemd): one WaitFor call, which
# the relay answers with the row as soon as the condition holds. No polling, no race
# between checking and subscribing, no access to the OVSDB socket.
#
#     ofport=$(examples/wait-for-tap-busctl.sh tap3 30) || exit 1
#
# Arguments: TAP [TIMEOUT]  (seconds, default 30)
# Environment: OVS_DBUS_RELAY_BUS  system (default), session, or a D-Bus address
# Exit status: 0 attached (ofport on stdout); non-zero otherwise, with busctl's message
# (for a timeout: `Call failed: Interface "tap3": not satisfied within 30000 ms`).
set -eu

tap=${1:?usage: wait-for-tap-busctl.sh TAP [TIMEOUT]}
timeout=${2:-30}
case ${OVS_DBUS_RELAY_BUS:-system} in
    system) where=--system ;;
    session) where=--user ;;
    *) where=--address=$OVS_DBUS_RELAY_BUS ;;
esac

# WaitFor(s table, s name, as conditions, u timeout_ms) -> a{sv} row. busctl gives up
# after 25 s by default, so allow it a little longer than the relay's own timeout.
row=$(busctl "$where" --timeout=$((timeout + 5)) call \
    org.ovsdbus.Relay1 /org/ovsdbus/Relay1 org.ovsdbus.Relay1 \
    WaitFor ssasu Interface "$tap" 1 'ofport>0' $((timeout * 1000)))

# busctl prints the dictionary flat: ... "ofport" ax 1 7 ...
printf '%s\n' "$row" | sed -n 's/.*"ofport" ax 1 \([0-9]*\).*/\1/p'
