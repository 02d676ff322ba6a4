//! What os-autoinst-openvswitch asks `ip` for, over rtnetlink instead of a child process:
//! bring a tap's link up (`ip link set TAP up`) and read the bridge's local port
//! (`ip addr show BRIDGE`). Errors are worded as `ip` words them, because the original
//! passes `ip`'s output on to its callers.

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use std::net::IpAddr;

/// A failed netlink request, with what `ip` would have printed and its exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LinkError {
    /// `ip`'s exit status: 1 for an unknown device, 2 when the kernel refuses.
    pub status: i32,
    /// `ip`'s message, e.g. `Cannot find device "tap7"`.
    pub message: String,
}

impl LinkError {
    fn no_device(name: &str) -> Self {
        Self {
            status: 1,
            message: format!("Cannot find device \"{name}\""),
        }
    }

    fn from_netlink(error: rtnetlink::Error) -> Self {
        let message = match error {
            rtnetlink::Error::NetlinkError(error) => {
                format!("RTNETLINK answers: {}", strerror(error.raw_code().abs()))
            }
            other => format!("RTNETLINK answers: {other}"),
        };
        Self { status: 2, message }
    }

    fn io(error: std::io::Error) -> Self {
        Self {
            status: 2,
            message: format!("Cannot open netlink socket: {}", without_code(&error)),
        }
    }
}

/// `strerror(errno)`, as `ip` prints it (without Rust's " (os error N)").
fn strerror(errno: i32) -> String {
    without_code(&std::io::Error::from_raw_os_error(errno))
}

fn without_code(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.split_once(" (os error") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}

/// A netlink socket for one request or two; its connection task ends with the handle.
fn connect() -> Result<Handle, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::io)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link(handle: &Handle, name: &str) -> Result<LinkMessage, LinkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(LinkError::no_device(name)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
            Err(LinkError::no_device(name))
        }
        Err(e) => Err(LinkError::from_netlink(e)),
    }
}

/// `ip link set NAME up`.
pub async fn set_up(name: &str) -> Result<(), LinkError> {
    let handle = connect()?;
    let index = link(&handle, name).await?.header.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(LinkError::from_netlink)
}

/// A device's MAC address and IPv4 addresses (`ip addr show NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Lower-case `aa:bb:cc:dd:ee:ff`; `None` for a device without one.
    pub mac: Option<String>,
    /// `address/prefix`, IPv4 only, in the kernel's order.
    pub ipv4: Vec<String>,
}

pub async fn addresses(name: &str) -> Result<Addresses, LinkError> {
    let handle = connect()?;
    let link = link(&handle, name).await?;
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if bytes.len() == 6 => Some(
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    });
    let mut ipv4 = Vec::new();
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(link.header.index)
        .execute();
    while let Some(address) = found.try_next().await.map_err(LinkError::from_netlink)? {
        // `ip` shows the local address (the peer's, on point-to-point links, is `Address`).
        let local = address.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let any = address.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(any) {
            ipv4.push(format!("{ip}/{}", address.header.prefix_len));
        }
    }
    Ok(Addresses { mac, ipv4 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_ip() {
        assert_eq!(
            LinkError::no_device("tap7").to_string(),
            "Cannot find device \"tap7\""
        );
        assert_eq!(strerror(libc::EPERM), "Operation not permitted");
    }
}
