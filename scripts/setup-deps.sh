#!/usr/bin/env bash
# Installs the system packages the tests and the demo need, only if something is missing.
#
#   scripts/setup-deps.sh [EXTRA_PACKAGE...]
#
# Idempotent: when everything is present it changes nothing and needs no root. It never
# starts the system's Open vSwitch services; tests and the demo run private servers.
set -euo pipefail

# command  ->  Debian package that provides it
declare -A COMMANDS=(
    [ovsdb-server]=openvswitch-common
    [ovsdb-tool]=openvswitch-common
    [ovs-vsctl]=openvswitch-switch
    [ovs-ofctl]=openvswitch-common
    [ovs-appctl]=openvswitch-common
    [ip]=iproute2
    [ss]=iproute2
    [nsenter]=util-linux
    [perl]=perl
    [lintian]=lintian
    [dpkg-shlibdeps]=dpkg-dev
    [strip]=binutils
    [dbus-daemon]=dbus
    [dbus-send]=dbus
    [dbus-monitor]=dbus
    [busctl]=systemd
    [setpriv]=util-linux
    [unshare]=util-linux
    [systemd-analyze]=systemd
    [prometheus]=prometheus
    [promtool]=prometheus
    [man]=man-db
    [groupadd]=passwd
    [pgrep]=procps
    [kill]=procps
)
# packages checked with dpkg (no single command to look for), plus any arguments
# (libnet-dbus-perl: the Perl D-Bus binding os-autoinst's qemu backend calls the openQA API with)
PACKAGES=(openvswitch-switch openvswitch-common python3-dbus python3-gi libnet-dbus-perl polkitd "$@")

have_command() {
    # /usr/sbin and /sbin are often missing from a non-root PATH
    PATH="$PATH:/usr/sbin:/sbin" type -P "$1" >/dev/null 2>&1
}

have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
add_missing() {
    local pkg
    for pkg in "${missing[@]+"${missing[@]}"}"; do
        [[ $pkg == "$1" ]] && return 0
    done
    missing+=("$1")
}

for cmd in "${!COMMANDS[@]}"; do
    have_command "$cmd" || add_missing "${COMMANDS[$cmd]}"
done
for pkg in "${PACKAGES[@]}"; do
    have_package "$pkg" || add_missing "$pkg"
done

if ((${#missing[@]} == 0)); then
    echo "setup-deps: all system dependencies are installed"
else
    echo "setup-deps: missing packages: ${missing[*]}"
    if ((EUID != 0)); then
        echo "setup-deps: error: installing them needs root; run: sudo $0 $*" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup-deps: error: apt-get not found; install the packages above by hand" >&2
        exit 1
    fi

    # Keep maintainer scripts from starting services (e.g. the system ovsdb-server),
    # unless the machine already has its own policy.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi

    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The openQA worker user, as openQA's packages create it: the shipped openQA policy names
# it, and the policy tests call as that user.
OPENQA_USER=_openqa-worker
if ! id "$OPENQA_USER" >/dev/null 2>&1; then
    if ((EUID != 0)); then
        echo "setup-deps: error: creating the user $OPENQA_USER needs root; run: sudo $0 $*" >&2
        exit 1
    fi
    PATH="$PATH:/usr/sbin:/sbin" useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --user-group "$OPENQA_USER"
    echo "setup-deps: created the system user $OPENQA_USER"
fi

# A user whose group list (in /etc/group, where polkit looks) has ovsdbus: the polkit test
# calls as that user.
POLKIT_USER=_ovsdbus-test
if ! id "$POLKIT_USER" >/dev/null 2>&1 || ! id -nG "$POLKIT_USER" | grep -qw ovsdbus; then
    if ((EUID != 0)); then
        echo "setup-deps: error: creating the user $POLKIT_USER needs root; run: sudo $0 $*" >&2
        exit 1
    fi
    PATH="$PATH:/usr/sbin:/sbin" groupadd -f --system ovsdbus
    if ! id "$POLKIT_USER" >/dev/null 2>&1; then
        PATH="$PATH:/usr/sbin:/sbin" useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --user-group --groups ovsdbus "$POLKIT_USER"
    else
        PATH="$PATH:/usr/sbin:/sbin" usermod -a -G ovsdbus "$POLKIT_USER"
    fi
    echo "setup-deps: created the system user $POLKIT_USER (group ovsdbus)"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup-deps: error: cargo not found; install Rust with rustup: https://rustup.rs" >&2
    exit 1
fi
