#!/bin/sh
# Wait until a VM's tap interface is attached to Open vSwitch, then print its OpenFlow
# port number. A VM launcher runs this after creating the tap and before starting the
# guest, so the guest never boots into a port the switch does not forward yet:
#
#     ofport=$(examples/wait-for-tap.sh tap3 30) || exit 1
#
# It asks the relay over D-Bus (`ovs-dbus-relay wait`, then the relay's GetRow), so it
# needs no access to the OVSDB socket and does not poll.
#
# Arguments: TAP [TIMEOUT]  (seconds, default 30; 0 waits forever)
# Environment:
#   OVS_DBUS_RELAY_BUS  system (default), session, or a D-Bus address
#   OVS_DBUS_RELAY      the ovs-dbus-relay binary (default: from PATH)
# Exit status: 0 attached (ofport on stdout); 1 not attached in time; 3 no relay or bus;
# 4 relay not synced; 2 other error (those of `ovs-dbus-relay wait`)
# (the reason on stderr).
set -eu

tap=${1:?usage: wait-for-tap.sh TAP [TIMEOUT]}
timeout=${2:-30}
relay=${OVS_DBUS_RELAY:-ovs-dbus-relay}
bus=${OVS_DBUS_RELAY_BUS:-system}

# `ofport>0`: vswitchd has added the interface to the datapath (-1 would mean it failed).
status=0
"$relay" wait --bus "$bus" --timeout "$timeout" Interface "$tap" 'ofport>0' || status=$?
[ "$status" -eq 0 ] || exit "$status"

# The row as the relay has it now; `ofport` is an `ax` with one element once assigned.
case $bus in
    system) where=--system ;;
    session) where=--user ;;
    *) where=--address=$bus ;;
esac
row=$(busctl "$where" call org.ovsdbus.Relay1 /org/ovsdbus/Relay1 org.ovsdbus.Relay1 \
    GetRow ss Interface "$tap") || exit 2
ofport=$(printf '%s\n' "$row" | sed -n 's/.*"ofport" ax 1 \([0-9]*\).*/\1/p')
[ -n "$ofport" ] || { echo "wait-for-tap.sh: no ofport in the relay's row for $tap" >&2; exit 2; }
echo "$ofport"
