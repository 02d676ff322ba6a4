#!/usr/bin/env bash
# Sandbox demo: a private ovsdb-server and a private D-Bus daemon in a temp dir, the relay
# between them, and dbus-monitor printing the signals while ovs-vsctl changes the switch.
#
#   scripts/demo.sh            (DEMO_PAUSE=seconds between steps, default 1;
#                               DEMO_VIEW=dbus-monitor for dbus-monitor's full dump
#                               instead of `ovs-dbus-relay watch`'s one line per signal)
#
# Nothing touches the system's Open vSwitch or D-Bus; everything is removed on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PAUSE=${DEMO_PAUSE:-1}
VIEW=${DEMO_VIEW:-watch}
if [[ -t 1 ]]; then
    BOLD=$'\e[1m' DIM=$'\e[2m' RESET=$'\e[0m'
else
    BOLD='' DIM='' RESET=''
fi

say() { printf '%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

# wait_for SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# --- build ------------------------------------------------------------------------------
say "Checking system dependencies"
scripts/setup-deps.sh curl
say "Building the relay (the first build takes a few minutes)"
cargo build --release
RELAY=$PWD/target/release/ovs-dbus-relay

# --- sandbox ----------------------------------------------------------------------------
# /tmp keeps socket paths short (unix sockets are limited to 108 bytes).
DIR=$(mktemp -d /tmp/ovs-dbus-relay-demo.XXXXXX)
PIDS=()

# exited PID: true once PID is gone or a zombie waiting to be reaped.
exited() {
    local stat
    stat=$(ps -o stat= -p "$1") || return 0
    [[ $stat == Z* ]]
}

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    if ((rc != 0 && rc != 130 && rc != 143)) && [[ -e $DIR/relay.log ]]; then
        printf '\n%s--- relay log (last 40 lines) ---%s\n' "$BOLD" "$RESET" >&2
        tail -n 40 "$DIR/relay.log" >&2
    fi
    # Stop in reverse start order: monitor, relay, bus, database.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        wait_for 3 exited "$pid" || kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With OVS_RUNDIR set, plain `ovs-vsctl` talks to unix:$DIR/db.sock, our private server.
export OVS_RUNDIR=$DIR OVS_LOGDIR=$DIR OVS_DBDIR=$DIR
DB=unix:$DIR/db.sock
BUS=unix:path=$DIR/bus.sock

say "Starting a private ovsdb-server on $DB"
OVSDB_SERVER=$(PATH="$PATH:/usr/sbin:/sbin" type -P ovsdb-server) || die "ovsdb-server not found"
ovsdb-tool create "$DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
"$OVSDB_SERVER" "$DIR/conf.db" \
    --remote="punix:$DIR/db.sock" --unixctl="$DIR/ovsdb.ctl" \
    --pidfile="$DIR/ovsdb.pid" --log-file="$DIR/ovsdb.log" 2>>"$DIR/ovsdb.log" &
PIDS+=("$!")
wait_for 10 ovs-vsctl --no-wait --timeout=2 init ||
    die "ovsdb-server did not start: $(tail -n 20 "$DIR/ovsdb.log")"

say "Starting a private dbus-daemon on $BUS"
cat >"$DIR/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>$BUS</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file="$DIR/bus.conf" --nofork --nopidfile 2>"$DIR/bus.log" &
PIDS+=("$!")
wait_for 10 dbus-send --bus="$BUS" --print-reply --dest=org.freedesktop.DBus \
    / org.freedesktop.DBus.GetId ||
    die "dbus-daemon did not start: $(cat "$DIR/bus.log")"

say "Starting the relay"
printf '%s$ ovs-dbus-relay run --db %s --bus %s --metrics-listen 127.0.0.1:…%s\n' \
    "$DIM" "$DB" "$BUS" "$RESET"
# A free loopback port for /metrics and /healthz.
METRICS=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=${RUST_LOG:-ovs_dbus_relay=info} \
    "$RELAY" run --db "$DB" --bus "$BUS" --metrics-listen "$METRICS" >"$DIR/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")

relay_state() {
    busctl --address="$BUS" get-property \
        org.ovsdbus.Relay1 /org/ovsdbus/Relay1 org.ovsdbus.Relay1 State 2>/dev/null || true
}
deadline=$((SECONDS + 15))
until [[ $(relay_state) == 's "ready"' ]]; do
    kill -0 "$RELAY_PID" 2>/dev/null || die "the relay exited before becoming ready"
    ((SECONDS < deadline)) || die "the relay is not ready after 15 s (State: $(relay_state))"
    sleep 0.1
done
say "Relay is ready (State = \"ready\")"

if [[ $VIEW == watch ]]; then
    say "Watching signals: ovs-dbus-relay watch"
    "$RELAY" watch --bus "$BUS" &
else
    say "Watching signals: dbus-monitor \"type='signal',sender='org.ovsdbus.Relay1',interface='org.ovsdbus.Relay1'\""
    # (sed hides the NameAcquired/NameLost that dbus-monitor reports about itself)
    dbus-monitor --address "$BUS" "type='signal',sender='org.ovsdbus.Relay1',interface='org.ovsdbus.Relay1'" \
        > >(sed -u '/member=Name\(Acquired\|Lost\)$/,+1d') &
fi
PIDS+=("$!")
sleep 0.5

# --- the show ---------------------------------------------------------------------------
run() {
    printf '\n%s$ %s%s\n' "$BOLD" "$*" "$RESET"
    "$@"
    sleep "$PAUSE"
}

run ovs-vsctl --no-wait add-br br0
run ovs-vsctl --no-wait add-port br0 tap0 -- set interface tap0 type=internal
run ovs-vsctl --no-wait add-port br0 tap1 -- set interface tap1 type=internal
run ovs-vsctl --no-wait set port tap0 tag=10
run ovs-vsctl --no-wait set interface tap1 external_ids:vm=demo
run "$RELAY" show --bus "$BUS"
run "$RELAY" wait --bus "$BUS" --json Port tap0 tag=10 --timeout 5
# A write through the relay returns once ovs-vswitchd has applied it (as plain ovs-vsctl
# does), so the new interface's ofport is already there. ovs-vswitchd runs in a network
# namespace of its own (userspace datapath), which takes root.
VSWITCHD=$(PATH="$PATH:/usr/sbin:/sbin" type -P ovs-vswitchd) || true
if [[ -n $VSWITCHD ]] && unshare --net true 2>/dev/null; then
    say "Starting ovs-vswitchd (userspace datapath, its own network namespace)"
    unshare --net "$VSWITCHD" "$DB" --unixctl="$DIR/vswitchd.ctl" \
        --pidfile="$DIR/vswitchd.pid" --log-file="$DIR/vswitchd.log" 2>>"$DIR/vswitchd.log" &
    PIDS+=("$!")
    wait_for 10 test -S "$DIR/vswitchd.ctl" ||
        die "ovs-vswitchd did not start: $(tail -n 20 "$DIR/vswitchd.log")"
    run busctl --address="$BUS" call org.ovsdbus.Relay1 /org/ovsdbus/Relay1 \
        org.ovsdbus.Switch1 AddBridge 'sa{sv}' br1 1 datapath_type s netdev
    run busctl --address="$BUS" call org.ovsdbus.Relay1 /org/ovsdbus/Relay1 \
        org.ovsdbus.Switch1 AddPort 'ssa{sv}' br1 tap5 1 type s internal
    say "AddPort returned after ovs-vswitchd applied it: tap5 has its OpenFlow port number"
    run busctl --address="$BUS" get-property org.ovsdbus.Relay1 \
        /org/ovsdbus/Relay1/interface/tap5 org.ovsdbus.Interface1 Ofport
    run busctl --address="$BUS" call org.ovsdbus.Relay1 /org/ovsdbus/Relay1 \
        org.ovsdbus.Switch1 DeleteBridge sb br1 false
else
    say "(skipping the ovs-vswitchd part: it needs root for a network namespace)"
fi
run ovs-vsctl --no-wait clear port tap0 tag
run ovs-vsctl --no-wait del-port tap1
run ovs-vsctl --no-wait del-br br0

say "Health and a few metrics (http://$METRICS)"
run curl -s "http://$METRICS/healthz"
curl -s "http://$METRICS/metrics" |
    grep -E '^ovsdbus_(events_total|state|rows|event_latency_seconds_count)' || true

sleep 1
printf '\n'
say "Done; cleaning up"
