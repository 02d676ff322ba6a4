//! Authorization of `Switch1` writes by polkit, as NetworkManager and systemd do for their
//! privileged methods: when polkitd runs on the bus, each write asks it whether the caller
//! may perform the action `org.ovsdbus.switch.modify` (`auth_admin_keep` by default; the
//! shipped rules.d file grants group `ovsdbus`). Without polkitd the bus policy alone
//! decides, as before. The openQA methods keep the original's rules (bus policy only).

use super::error::MethodError;
use std::collections::HashMap;
use zbus::message::{Flags, Header};
use zbus::{Connection, Variant};

pub const ACTION: &str = "org.ovsdbus.switch.modify";
const POLKIT: &str = "org.freedesktop.PolicyKit1";
const AUTHORITY_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY: &str = "org.freedesktop.PolicyKit1.Authority";
/// CheckAuthorization's flag: the caller may be asked to authenticate.
const ALLOW_USER_INTERACTION: u32 = 1;

async fn polkitd_present(conn: &Connection) -> bool {
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(POLKIT,),
        )
        .await;
    reply.is_ok_and(|r| r.body().deserialize::<bool>().unwrap_or(false))
}

/// Ok when polkit is not on the bus, or authorizes the caller of `header`.
pub async fn authorize(conn: &Connection, header: &Header<'_>) -> Result<(), MethodError> {
    if !polkitd_present(conn).await {
        return Ok(());
    }
    let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
    let subject = (
        "system-bus-name",
        HashMap::from([("name", Variant::from(sender.as_str()))]),
    );
    // The caller says whether it can take an authentication prompt (busctl,
    // `gdbus --interactive`); polkit then talks to its agent while this call waits.
    let flags = if header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH)
    {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    let details: HashMap<&str, &str> = HashMap::new();
    let reply = conn
        .call_method(
            Some(POLKIT),
            AUTHORITY_PATH,
            Some(AUTHORITY),
            "CheckAuthorization",
            &(subject, ACTION, details, flags, ""),
        )
        .await
        .map_err(|e| MethodError::AccessDenied(format!("polkit did not answer: {e}")))?;
    let (authorized, challenge, _): (bool, bool, HashMap<String, String>) = reply
        .body()
        .deserialize()
        .map_err(|e| MethodError::AccessDenied(format!("polkit's answer: {e}")))?;
    match (authorized, challenge) {
        (true, _) => Ok(()),
        (false, true) => Err(MethodError::InteractiveAuthorizationRequired(format!(
            "{ACTION} needs authentication: call with interactive authorization allowed, \
             or be in a group that polkit's rules grant it (ovsdbus)"
        ))),
        (false, false) => Err(MethodError::AccessDenied(format!(
            "polkit does not authorize {ACTION} for this caller"
        ))),
    }
}
