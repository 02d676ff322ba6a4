//! `org.freedesktop.DBus.Introspectable`, conventional: a node lists its own interfaces and
//! its children as empty `<node name="…"/>` elements, never their contents. So the reply
//! for `/` is a few hundred bytes however many rows the switch has, and a table's node
//! lists one short line per row.
//!
//! The relay's own interfaces are described once, in the shipped
//! `dbus/org.ovsdbus.Relay1.xml`; the row interfaces come from their property tables
//! ([`super::objects`]). `tests/it/introspection.rs` checks the two against each other and
//! against what the dispatcher answers.

use super::escape::encode_label;
use super::objects;
use crate::replica::Replica;
use crate::replica::layout::TableId;
use std::fmt::Write;
use std::sync::LazyLock;

/// The shipped description of every interface the relay serves.
pub const SHIPPED: &str = include_str!("../../dbus/org.ovsdbus.Relay1.xml");

const HEADER: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
"#;

/// The standard interfaces every object has.
const STANDARD: &str = r#"  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="props" type="a{sv}" direction="out"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
"#;

const OBJECT_MANAGER: &str = r#"  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects">
      <arg name="object_paths_interfaces_and_properties" type="a{oa{sa{sv}}}" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg name="object_path" type="o"/>
      <arg name="interfaces_and_properties" type="a{sa{sv}}"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg name="object_path" type="o"/>
      <arg name="interfaces" type="as"/>
    </signal>
  </interface>
"#;

/// `<interface name="NAME">…</interface>` from the shipped file, indented as a child of
/// `<node>`. Empty when the file lacks it (a unit test makes sure it does not).
pub fn shipped_interface(name: &str) -> &'static str {
    let open = format!("  <interface name=\"{name}\">");
    let Some(start) = SHIPPED.find(&open) else {
        return "";
    };
    let close = "</interface>\n";
    SHIPPED[start..]
        .find(close)
        .map_or("", |end| &SHIPPED[start..start + end + close.len()])
}

fn document(interfaces: &[&str], children: impl IntoIterator<Item = String>) -> String {
    let mut xml = String::from(HEADER);
    xml.push_str("<node>\n");
    for interface in interfaces {
        xml.push_str(interface);
    }
    xml.push_str(STANDARD);
    for child in children {
        let _ = writeln!(xml, "  <node name=\"{child}\"/>");
    }
    xml.push_str("</node>\n");
    xml
}

/// The root object's answer; the same at any size of switch.
static ROOT: LazyLock<String> = LazyLock::new(|| {
    document(
        &[
            shipped_interface("org.ovsdbus.Relay1"),
            shipped_interface("org.ovsdbus.Switch1"),
            OBJECT_MANAGER,
        ],
        TableId::PUBLISHED.map(|t| t.label().to_owned()),
    )
});

pub fn root() -> String {
    ROOT.clone()
}

/// A node on the way to the objects (`/`, `/org`, …): only its children.
pub fn ancestor(children: &[&str]) -> String {
    document(&[], children.iter().map(|c| (*c).to_owned()))
}

/// `/org/ovsdbus/Relay1/<table>`: one child per row, by path label, sorted.
pub fn table(replica: Option<&Replica>, table: TableId) -> String {
    let mut labels: Vec<String> = replica
        .map(|r| {
            r.rows(table)
                .map(|(_, row)| encode_label(r.name_of(table, row)))
                .collect()
        })
        .unwrap_or_default();
    labels.sort_unstable();
    document(&[], labels)
}

/// A row object: its table's interface, no children.
pub fn row(table: TableId) -> String {
    let mut interface = String::new();
    if let Some((name, properties)) = objects::describe(table) {
        objects::write_introspection(&mut interface, 2, name, properties);
    }
    document(&[&interface], [])
}

/// `/switch` with `--openqa-compat`.
pub fn openqa() -> String {
    document(&[shipped_interface("org.opensuse.os_autoinst.switch")], [])
}

/// `(interface, method, in-signature)` for every method the shipped file documents on an
/// interface of the relay's own: what the dispatcher must route. Parsed once.
pub fn shipped_methods() -> &'static [(String, String, String)] {
    static METHODS: LazyLock<Vec<(String, String, String)>> = LazyLock::new(parse_methods);
    &METHODS
}

fn parse_methods() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut interface = String::new();
    let mut method: Option<(String, String)> = None;
    let attr = |line: &str, key: &str| {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        Some(line[start..start + line[start..].find('"')?].to_owned())
    };
    for line in SHIPPED.lines().map(str::trim) {
        if line.starts_with("<interface ") {
            interface = attr(line, "name").unwrap_or_default();
        } else if line.starts_with("<method ") {
            let name = attr(line, "name").unwrap_or_default();
            if line.ends_with("/>") {
                out.push((interface.clone(), name, String::new()));
            } else {
                method = Some((name, String::new()));
            }
        } else if line.starts_with("<arg ") && attr(line, "direction").as_deref() == Some("in") {
            if let Some((_, signature)) = method.as_mut() {
                signature.push_str(&attr(line, "type").unwrap_or_default());
            }
        } else if line.starts_with("</method>")
            && let Some((name, signature)) = method.take()
        {
            out.push((interface.clone(), name, signature));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_interface_is_found() {
        for name in [
            "org.ovsdbus.Relay1",
            "org.ovsdbus.Switch1",
            "org.ovsdbus.Bridge1",
            "org.ovsdbus.Port1",
            "org.ovsdbus.Interface1",
            "org.opensuse.os_autoinst.switch",
        ] {
            let block = shipped_interface(name);
            assert!(block.starts_with("  <interface name="), "{name}");
            assert!(block.ends_with("</interface>\n"), "{name}");
        }
    }

    #[test]
    fn the_root_lists_children_not_their_contents() {
        let xml = root();
        assert!(xml.contains("<node name=\"port\"/>"), "{xml}");
        assert!(!xml.contains("org.ovsdbus.Port1"));
        assert!(xml.len() < 16 * 1024, "{} bytes", xml.len());
        assert!(!xml.contains(
            "<signal name=\"PortAdded\">\n      <arg name=\"name\" type=\"s\" direction"
        ));
    }

    #[test]
    fn shipped_methods_have_their_in_signatures() {
        let methods = shipped_methods();
        let find = |i: &str, m: &str| {
            methods
                .iter()
                .find(|(a, b, _)| a == i && b == m)
                .map(|(_, _, s)| s.clone())
        };
        assert_eq!(
            find("org.ovsdbus.Relay1", "WaitFor").as_deref(),
            Some("ssasu")
        );
        assert_eq!(
            find("org.ovsdbus.Relay1", "ListBridges").as_deref(),
            Some("")
        );
        assert_eq!(
            find("org.ovsdbus.Switch1", "AddPort").as_deref(),
            Some("ssa{sv}")
        );
        assert_eq!(
            find("org.opensuse.os_autoinst.switch", "set_vlan").as_deref(),
            Some("su")
        );
    }
}
