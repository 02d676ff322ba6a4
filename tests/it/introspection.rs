//! `dbus/org.ovsdbus.Relay1.xml` describes exactly what the running relay introspects.

use crate::common::signals::{BUS_NAME, ROOT, introspect_at};
use crate::common::{Stack, poll_until_async};
use std::time::Duration;

/// The `<interface name="NAME">…</interface>` block, without comments or indentation.
fn interface_block(xml: &str, name: &str) -> Option<Vec<String>> {
    let start = xml.find(&format!("<interface name=\"{name}\">"))?;
    let end = start + xml[start..].find("</interface>")? + "</interface>".len();
    let mut block = &xml[start..end];
    let mut out = String::new();
    while let Some(open) = block.find("<!--") {
        out.push_str(&block[..open]);
        let close = block[open..]
            .find("-->")
            .map_or(block.len(), |c| open + c + 3);
        block = &block[close..];
    }
    out.push_str(block);
    Some(
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    introspect_at(conn, BUS_NAME, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_introspection_matches_the_service() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dbus/org.ovsdbus.Relay1.xml"
    ))
    .unwrap();
    let stack = Stack::start(&["--openqa-compat"]).await;
    let (db, sub) = (&stack.db, &stack.sub);
    db.vsctl(&["add-br", "br0"]);
    let bridge = format!("{ROOT}/bridge/br0");
    let appeared = poll_until_async(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            if introspect(&sub.conn, &bridge)
                .await
                .contains("org.ovsdbus.Bridge1")
            {
                Ok(())
            } else {
                Err(())
            }
        },
    )
    .await;
    assert!(appeared.is_ok(), "bridge object never appeared");

    let root = introspect(&sub.conn, ROOT).await;
    let openqa = introspect_at(&sub.conn, "org.opensuse.os_autoinst.switch", "/switch").await;
    let cases = [
        ("org.ovsdbus.Relay1", root.clone()),
        ("org.ovsdbus.Switch1", root.clone()),
        ("org.opensuse.os_autoinst.switch", openqa),
        ("org.ovsdbus.Bridge1", introspect(&sub.conn, &bridge).await),
        (
            "org.ovsdbus.Port1",
            introspect(&sub.conn, &format!("{ROOT}/port/br0")).await,
        ),
        (
            "org.ovsdbus.Interface1",
            introspect(&sub.conn, &format!("{ROOT}/interface/br0")).await,
        ),
    ];
    for (name, live) in cases {
        let live = interface_block(&live, name).unwrap_or_else(|| panic!("service lacks {name}"));
        let file = interface_block(&shipped, name)
            .unwrap_or_else(|| panic!("dbus/org.ovsdbus.Relay1.xml lacks {name}"));
        assert_eq!(file, live, "{name} differs from the running service");
    }
    // Every interface the file documents is served.
    for line in shipped
        .lines()
        .filter(|l| l.trim_start().starts_with("<interface name="))
    {
        let name = line.split('"').nth(1).unwrap();
        assert!(
            name.starts_with("org.ovsdbus.") || name == "org.opensuse.os_autoinst.switch",
            "{name}"
        );
    }
    assert!(root.contains("org.freedesktop.DBus.ObjectManager"));
}
