#!/usr/bin/env bash
# Builds the Debian package from a release build, without debhelper or cargo-deb:
#
#   scripts/package.sh            # -> target/debian/ovs-dbus-relay_VERSION_ARCH.deb
#   scripts/package.sh --check    # ... then list it (dpkg-deb -c) and run lintian on it
#   SKIP_BUILD=1 scripts/package.sh   # package the release binary already built
#
# The package installs the stripped binary, the unit, the bus policies, the activation
# file, the interface XML, man pages and completions generated from the binary itself, the
# sysusers.d file for group ovsdbus, /etc/default/ovs-dbus-relay (a conffile), the README,
# the D-Bus API reference and the openQA drop-in under /usr/share/doc/ovs-dbus-relay/, and
# the polkit action and rules.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
check=false
[[ ${1:-} == --check ]] && check=true

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || {
        echo "package.sh: $tool not found (apt-get install dpkg-dev binutils)" >&2
        exit 1
    }
done

upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
version="$upstream-1"
arch=$(dpkg --print-architecture)
out=target/debian
root=$out/root
deb=$out/ovs-dbus-relay_${version}_${arch}.deb

[[ ${SKIP_BUILD:-} == 1 ]] || cargo build --release --locked
rm -rf "$root" && mkdir -p "$root/DEBIAN"
bin=target/release/ovs-dbus-relay

inst() { install -D -m "$1" "$2" "$root/$3"; }
inst 755 "$bin" usr/bin/ovs-dbus-relay
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/ovs-dbus-relay"
inst 644 systemd/ovs-dbus-relay.service usr/lib/systemd/system/ovs-dbus-relay.service
inst 644 systemd/ovs-dbus-relay.sysusers usr/lib/sysusers.d/ovs-dbus-relay.conf
inst 644 systemd/ovs-dbus-relay.default etc/default/ovs-dbus-relay
inst 644 dbus/org.ovsdbus.Relay1.conf usr/share/dbus-1/system.d/org.ovsdbus.Relay1.conf
inst 644 dbus/org.opensuse.os_autoinst.switch.conf usr/share/dbus-1/system.d/org.opensuse.os_autoinst.switch.conf
inst 644 dbus/org.ovsdbus.Relay1.service usr/share/dbus-1/system-services/org.ovsdbus.Relay1.service
inst 644 dbus/org.ovsdbus.Relay1.xml usr/share/dbus-1/interfaces/org.ovsdbus.Relay1.xml
inst 644 polkit/org.ovsdbus.switch.policy usr/share/polkit-1/actions/org.ovsdbus.switch.policy
inst 644 polkit/ovs-dbus-relay.rules usr/share/polkit-1/rules.d/ovs-dbus-relay.rules

doc=usr/share/doc/ovs-dbus-relay
inst 644 README.md "$doc/README.md"
inst 644 docs/dbus-api.md "$doc/dbus-api.md"
inst 644 systemd/openqa.conf "$doc/examples/openqa.conf"
inst 644 packaging/debian/copyright "$doc/copyright"
inst 644 packaging/debian/lintian-overrides usr/share/lintian/overrides/ovs-dbus-relay
{
    echo "ovs-dbus-relay ($version) unstable; urgency=medium"
    echo
    echo "  * Package built from the ovs-dbus-relay source tree."
    echo
    echo " -- ovs-dbus-relay maintainers <maintainers@ovs-dbus-relay.example.org>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n >"$root/$doc/changelog.Debian.gz"

"$bin" manpages "$root/usr/share/man/man8"
gzip -9n "$root"/usr/share/man/man8/*.8
mkdir -p "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"
"$bin" completions bash >"$root/usr/share/bash-completion/completions/ovs-dbus-relay"
"$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_ovs-dbus-relay"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/ovs-dbus-relay.fish"
find "$root" -type d -exec chmod 755 {} +
find "$root/usr/share" "$root/etc" -type f -exec chmod 644 {} +

# Shared-library dependencies, as dh_shlibdeps finds them.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/debian"
printf 'Source: ovs-dbus-relay\n\nPackage: ovs-dbus-relay\nArchitecture: any\n' >"$scratch/debian/control"
shlibs=$(cd "$scratch" && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/ovs-dbus-relay" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')

installed=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: ovs-dbus-relay
Version: $version
Architecture: $arch
Maintainer: ovs-dbus-relay maintainers <maintainers@ovs-dbus-relay.example.org>
Installed-Size: $installed
Depends: $shlibs, dbus-system-bus | dbus, systemd
Recommends: openvswitch-switch
Suggests: openvswitch-common, polkitd
Section: net
Priority: optional
Description: Open vSwitch database changes as D-Bus signals and objects
 ovs-dbus-relay subscribes to the Open vSwitch database (OVSDB), keeps a replica
 of its bridges, ports and interfaces, and publishes every change as typed D-Bus
 signals and objects with properties on the system bus (org.ovsdbus.Relay1).
 It also offers policy-guarded writes (org.ovsdbus.Switch1), Prometheus
 metrics, and a drop-in replacement for os-autoinst-openvswitch.
CONTROL
echo /etc/default/ovs-dbus-relay >"$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$root/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "package.sh: built $deb"

if $check; then
    command -v lintian >/dev/null || {
        echo "package.sh: lintian not found (apt-get install lintian)" >&2
        exit 1
    }
    dpkg-deb -c "$deb"
    # Errors and warnings fail the build; informational tags are printed only.
    lintian --fail-on error,warning --display-info "$deb"
    echo "package.sh: lintian clean"
fi
