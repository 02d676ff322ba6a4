//! The relay's one method dispatcher. Every call to the relay's connections is answered
//! here, from the engine's current snapshot: on the main connection the root object's
//! interfaces and every row object under `/org/ovsdbus/Relay1/{bridge,port,interface}` —
//! which is not registered anywhere, so start-up, bursts and bus reconnects cost nothing per
//! row, and no lock is shared with the engine or the publisher; on the openQA connection
//! (see [`Role`]) only `/switch`.
//!
//! zbus's own object server is never started on these connections (it would answer
//! `UnknownObject` for every row path, and its `Introspect` inlines whole subtrees).

use super::audit;
use super::error::MethodError;
use super::escape::{decode_label, encode_label};
use super::limits::Expensive;
use super::objects::{ManagedObjects, Property, SnapshotRow, describe};
use super::openqa::{OPENQA_PATH, OpenQaSwitch};
use super::relay::RelayInterface;
use super::switch::SwitchInterface;
use super::{ROOT_PATH, introspect};
use crate::replica::layout::TableId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_stream::StreamExt;
use zbus::message::{Header, Type as MessageType};
use zbus::zvariant::{DynamicType, Type};
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedVariant};

const PEER: &str = "org.freedesktop.DBus.Peer";
const INTROSPECTABLE: &str = "org.freedesktop.DBus.Introspectable";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";
const RELAY: &str = "org.ovsdbus.Relay1";
const SWITCH: &str = "org.ovsdbus.Switch1";
const OPENQA: &str = "org.opensuse.os_autoinst.switch";

/// Method calls waiting in the stream before zbus stops reading the socket; each one is
/// handed to its own task at once, so this only absorbs a burst.
const CALL_QUEUE: usize = 1024;

/// How long a call that arrives before the first snapshot waits for it before the relay
/// answers `NotConnected`: below the 25 s that D-Bus clients wait by default.
const FIRST_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// What the relay serves.
pub struct Service {
    pub relay: RelayInterface,
    pub switch: SwitchInterface,
    pub openqa: Option<OpenQaSwitch>,
    /// Turns for `GetManagedObjects` and `Show`.
    pub expensive: Expensive,
}

/// What a connection serves. Bus policy applies per connection (a connection that owns
/// two names is reachable under either name's allow rules), so the openQA name lives on a
/// connection of its own that serves nothing but `/switch`: whoever os-autoinst's policy
/// lets call `org.opensuse.os_autoinst.switch` cannot reach `org.ovsdbus.Switch1` through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `org.ovsdbus.Relay1`: the root object and the row objects.
    Relay,
    /// `org.opensuse.os_autoinst.switch`: `/switch` only.
    OpenQa,
}

/// Which object a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Root,
    /// `/`, `/org`, `/org/ovsdbus`: nodes on the way, with their one child.
    Ancestor(&'static [&'static str]),
    /// `/org/ovsdbus/Relay1/port`: the node whose children are the rows.
    Table(TableId),
    /// A row object, by its (decoded) name.
    Row(TableId, String),
    OpenQa,
    Unknown,
}

fn route(path: &str, role: Role) -> Target {
    if role == Role::OpenQa {
        return match path {
            "/" => Target::Ancestor(&["switch"]),
            OPENQA_PATH => Target::OpenQa,
            _ => Target::Unknown,
        };
    }
    match path {
        ROOT_PATH => return Target::Root,
        "/" => return Target::Ancestor(&["org"]),
        "/org" => return Target::Ancestor(&["ovsdbus"]),
        "/org/ovsdbus" => return Target::Ancestor(&["Relay1"]),
        _ => {}
    }
    let Some(rest) = path
        .strip_prefix(ROOT_PATH)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Target::Unknown;
    };
    let (table, label) = match rest.split_once('/') {
        Some((table, label)) => (table, Some(label)),
        None => (rest, None),
    };
    let Some(table) = TableId::PUBLISHED.into_iter().find(|t| t.label() == table) else {
        return Target::Unknown;
    };
    match label {
        None => Target::Table(table),
        // Only the canonical spelling names an object: one path per row.
        Some(label) => match decode_label(label) {
            Some(name) if encode_label(&name) == label => Target::Row(table, name),
            _ => Target::Unknown,
        },
    }
}

/// Answers method calls on `conn`, in `role`, until it closes. Every call runs in a task
/// of its own, so a long one (`WaitFor`, a write, a large `GetManagedObjects`) never holds
/// up the next.
pub async fn serve(conn: Connection, service: Arc<Service>, role: Role) -> zbus::Result<()> {
    let mut rule = MatchRule::builder().msg_type(MessageType::MethodCall);
    if let Some(unique) = conn.unique_name() {
        rule = rule.destination(unique.clone());
    }
    let queue = std::num::NonZeroUsize::new(CALL_QUEUE);
    let mut calls = MessageStream::for_match_rule(rule.build()?, &conn, queue).await?;
    if role == Role::Relay {
        watch_departures(&conn, &service).await?;
    }
    tokio::spawn(async move {
        while let Some(call) = calls.next().await {
            let Ok(call) = call else { break };
            let (conn, service) = (conn.clone(), service.clone());
            tokio::spawn(async move { service.handle(&conn, &call, role).await });
        }
    });
    Ok(())
}

/// Drops the waiters of callers that leave the bus: a unique name that loses its owner is a
/// client gone for good.
async fn watch_departures(conn: &Connection, service: &Service) -> zbus::Result<()> {
    let queue = std::num::NonZeroUsize::new(CALL_QUEUE);
    let departures = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(2, "")
        .build()?;
    let mut departures = MessageStream::for_match_rule(departures, conn, queue).await?;
    let relay = service.relay.shared.clone();
    tokio::spawn(async move {
        while let Some(Ok(signal)) = departures.next().await {
            if let Ok((name, _, _)) = signal.body().deserialize::<(String, String, String)>()
                && name.starts_with(':')
            {
                relay.waiters.caller_left(&name);
            }
        }
    });
    Ok(())
}

/// Runs an answer that walks the whole snapshot (O(rows)) off the async workers' queue, so
/// the publisher and cheap calls keep their threads.
fn whole<R>(answer: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(answer)
}

/// The call's arguments, or `InvalidArgs` naming the signature expected.
fn args<T: DeserializeOwned + Type>(call: &Message) -> Result<T, MethodError> {
    call.body().deserialize::<T>().map_err(|_| {
        MethodError::InvalidArgs(format!(
            "expected arguments of signature \"{}\"",
            T::SIGNATURE
        ))
    })
}

async fn reply<B: Serialize + DynamicType>(
    conn: &Connection,
    header: &Header<'_>,
    result: Result<B, MethodError>,
) {
    let sent = match result {
        Ok(body) => conn.reply(header, &body).await,
        Err(error) => conn.reply_dbus_error(header, error).await,
    };
    if let Err(e) = sent {
        tracing::debug!("reply not sent: {e}");
    }
}

/// `Properties.Get`: a root value, or a row's property written from the snapshot.
enum PropertyReply {
    Root(OwnedVariant),
    Row(SnapshotRow, &'static Property),
}

impl Type for PropertyReply {
    const SIGNATURE: &'static zbus::Signature = &zbus::Signature::Variant;
}

impl Serialize for PropertyReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Root(value) => value.serialize(serializer),
            Self::Row(row, property) => row.property(property).serialize(serializer),
        }
    }
}

/// `Properties.GetAll`: the root's values, or a row's properties written from the snapshot.
enum PropertiesReply {
    Root(HashMap<String, OwnedVariant>),
    Row(SnapshotRow),
}

impl Type for PropertiesReply {
    const SIGNATURE: &'static zbus::Signature = <HashMap<String, OwnedVariant>>::SIGNATURE;
}

impl Serialize for PropertiesReply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Root(values) => values.serialize(serializer),
            Self::Row(row) => row.properties().serialize(serializer),
        }
    }
}

fn unknown_method(interface: &str, member: &str) -> MethodError {
    MethodError::UnknownMethod(format!("{interface} has no method {member}"))
}

impl Service {
    /// The interfaces an object has, for calls that do not name one.
    fn interfaces(target: &Target) -> &'static [&'static str] {
        match target {
            Target::Root => &[
                RELAY,
                SWITCH,
                OBJECT_MANAGER,
                PROPERTIES,
                INTROSPECTABLE,
                PEER,
            ],
            Target::OpenQa => &[OPENQA, INTROSPECTABLE, PEER],
            Target::Row(..) => &[PROPERTIES, INTROSPECTABLE, PEER],
            _ => &[INTROSPECTABLE, PEER],
        }
    }

    async fn handle(&self, conn: &Connection, call: &Message, role: Role) {
        let header = call.header();
        let (Some(path), Some(member)) = (header.path(), header.member()) else {
            return;
        };
        let target = route(path.as_str(), role);
        let member = member.as_str();
        // Calls that read or write the switch wait for the first snapshot (bounded): a
        // client that started the relay by bus activation gets its answer, not
        // `NotConnected`. `Peer`, `Introspectable` and the root's properties (`State`
        // says how far the relay has got) answer at once.
        let about_the_switch = match header.interface().map(|i| i.as_str()) {
            Some(PEER | INTROSPECTABLE) => false,
            Some(PROPERTIES) => target != Target::Root,
            _ => true,
        };
        if about_the_switch {
            self.relay
                .shared
                .store
                .wait_until(FIRST_SNAPSHOT_WAIT, |_| true)
                .await;
        }
        if !self.exists(&target) {
            let error = MethodError::UnknownObject(format!("no object at {path}"));
            return reply::<()>(conn, &header, Err(error)).await;
        }
        let interface = match header.interface() {
            Some(interface) => interface.as_str(),
            // D-Bus allows calls without an interface: the method name decides.
            None => Self::interfaces(&target)
                .iter()
                .copied()
                .find(|i| self.has_method(i, member))
                .unwrap_or(""),
        };
        if !Self::interfaces(&target).contains(&interface) {
            let error =
                MethodError::UnknownInterface(format!("{path} has no interface {interface:?}"));
            return reply::<()>(conn, &header, Err(error)).await;
        }
        match interface {
            PEER => self.peer(conn, &header, member).await,
            INTROSPECTABLE if member == "Introspect" => {
                reply(conn, &header, Ok(self.introspect(&target))).await
            }
            PROPERTIES => self.properties(conn, &header, call, &target, member).await,
            OBJECT_MANAGER if member == "GetManagedObjects" => {
                self.managed_objects(conn, &header).await
            }
            RELAY => self.relay(conn, &header, call, member).await,
            SWITCH => self.switch(conn, &header, call, member).await,
            OPENQA => self.openqa(conn, &header, call, member).await,
            _ => reply::<()>(conn, &header, Err(unknown_method(interface, member))).await,
        }
    }

    /// Whether the object is there: a row object exists exactly while its row does.
    fn exists(&self, target: &Target) -> bool {
        match target {
            Target::Unknown => false,
            Target::Row(table, name) => self
                .relay
                .shared
                .with_replica(|r| r.is_some_and(|r| r.find(*table, name).is_some())),
            _ => true,
        }
    }

    fn has_method(&self, interface: &str, member: &str) -> bool {
        match interface {
            PEER => matches!(member, "Ping" | "GetMachineId"),
            INTROSPECTABLE => member == "Introspect",
            PROPERTIES => matches!(member, "Get" | "GetAll" | "Set"),
            OBJECT_MANAGER => member == "GetManagedObjects",
            _ => introspect::shipped_methods()
                .iter()
                .any(|(i, m, _)| i == interface && m == member),
        }
    }

    async fn peer(&self, conn: &Connection, header: &Header<'_>, member: &str) {
        match member {
            "Ping" => reply(conn, header, Ok(())).await,
            "GetMachineId" => {
                let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(f).ok())
                    .map(|id| id.trim().to_owned())
                    .ok_or_else(|| MethodError::Failed("no machine id on this host".into()));
                reply(conn, header, id).await
            }
            other => reply::<()>(conn, header, Err(unknown_method(PEER, other))).await,
        }
    }

    fn introspect(&self, target: &Target) -> String {
        match target {
            Target::Root => introspect::root(),
            Target::Ancestor(children) => introspect::ancestor(children),
            Target::Table(table) => self
                .relay
                .shared
                .with_replica(|replica| introspect::table(replica, *table)),
            Target::Row(table, _) => introspect::row(*table),
            Target::OpenQa => introspect::openqa(),
            Target::Unknown => String::new(),
        }
    }

    async fn properties(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        call: &Message,
        target: &Target,
        member: &str,
    ) {
        match member {
            "Get" => {
                let result = args::<(String, String)>(call)
                    .and_then(|(interface, name)| self.get_property(target, &interface, &name));
                reply(conn, header, result).await
            }
            "GetAll" => {
                let result = args::<String>(call)
                    .and_then(|interface| self.get_all_properties(target, &interface));
                reply(conn, header, result).await
            }
            "Set" => {
                let result = args::<(String, String, OwnedVariant)>(call).and_then(
                    |(interface, name, _)| {
                        self.get_property(target, &interface, &name)?;
                        Err::<(), _>(MethodError::PropertyReadOnly(format!(
                            "{name} is read-only"
                        )))
                    },
                );
                reply(conn, header, result).await
            }
            other => reply::<()>(conn, header, Err(unknown_method(PROPERTIES, other))).await,
        }
    }

    fn get_property(
        &self,
        target: &Target,
        interface: &str,
        name: &str,
    ) -> Result<PropertyReply, MethodError> {
        let unknown =
            || MethodError::UnknownProperty(format!("{interface} has no property {name:?}"));
        match target {
            Target::Root if interface == RELAY => self
                .relay
                .property(name)
                .map(PropertyReply::Root)
                .ok_or_else(unknown),
            Target::Row(table, row_name) => {
                let (row_interface, properties) = describe(*table).expect("published table");
                if interface != row_interface {
                    return Err(unknown());
                }
                let property = properties
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(unknown)?;
                Ok(PropertyReply::Row(self.row(*table, row_name)?, property))
            }
            _ => Err(unknown()),
        }
    }

    fn get_all_properties(
        &self,
        target: &Target,
        interface: &str,
    ) -> Result<PropertiesReply, MethodError> {
        match target {
            Target::Root if interface == RELAY => Ok(PropertiesReply::Root(
                crate::bus::RELAY_PROPERTIES
                    .iter()
                    .filter_map(|name| Some(((*name).to_owned(), self.relay.property(name)?)))
                    .collect(),
            )),
            Target::Row(table, name) if describe(*table).is_some_and(|(i, _)| i == interface) => {
                Ok(PropertiesReply::Row(self.row(*table, name)?))
            }
            // Interfaces without properties, or an interface the object does not have.
            Target::Root if Self::interfaces(target).contains(&interface) => {
                Ok(PropertiesReply::Root(HashMap::new()))
            }
            _ => Err(MethodError::UnknownInterface(format!(
                "the object has no interface {interface:?}"
            ))),
        }
    }

    /// A row of the current snapshot; `UnknownObject` when it is gone.
    fn row(&self, table: TableId, name: &str) -> Result<SnapshotRow, MethodError> {
        self.relay
            .shared
            .snapshot()
            .and_then(|replica| SnapshotRow::find(replica, table, name))
            .ok_or_else(|| MethodError::UnknownObject(format!("no {table} named {name:?}")))
    }

    /// Built off the async workers: at 20,000 rows the reply is tens of megabytes of
    /// serialisation, written from one snapshot without copying the replica.
    async fn managed_objects(&self, conn: &Connection, header: &Header<'_>) {
        let caller = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let _turn = match self
            .expensive
            .turn(conn, &caller, "GetManagedObjects")
            .await
        {
            Ok(turn) => turn,
            Err(e) => return reply::<()>(conn, header, Err(e)).await,
        };
        let snapshot = self.relay.shared.snapshot();
        let mut builder = Message::method_return(header);
        if let Some(unique) = conn.unique_name() {
            builder = builder.sender(unique.clone());
        }
        let built = tokio::task::spawn_blocking(move || {
            let objects = ManagedObjects::new(snapshot);
            // Tens of megabytes at 20,000 rows: written once into a buffer that fits, not
            // into one that doubles as it grows, copying itself each time (address space
            // reserved beyond what is written costs no memory).
            let mut body = Vec::with_capacity(objects.capacity_hint());
            let ctxt = zbus::wire::serialized::Context::new(zbus::wire::NATIVE_ENDIAN, 0);
            // SAFETY: the body carries no file descriptors, so none can be lost or
            // attached to the wrong message.
            unsafe { zbus::wire::to_writer(&mut std::io::Cursor::new(&mut body), ctxt, &objects) }?;
            // SAFETY: as above; the bytes were just written for exactly this signature.
            unsafe { builder.build_raw_body(&body, ManagedObjects::SIGNATURE, Vec::new()) }
        })
        .await;
        let sent = match built {
            Ok(Ok(message)) => conn.send(&message).await,
            Ok(Err(e)) => conn.reply_dbus_error(header, MethodError::from(e)).await,
            Err(e) => {
                let error = MethodError::Failed(format!("GetManagedObjects failed: {e}"));
                conn.reply_dbus_error(header, error).await
            }
        };
        if let Err(e) = sent {
            tracing::debug!("GetManagedObjects reply not sent: {e}");
        }
    }

    async fn relay(&self, conn: &Connection, header: &Header<'_>, call: &Message, member: &str) {
        let relay = &self.relay;
        let caller = header.sender().map(|s| s.to_string()).unwrap_or_default();
        match member {
            "ListBridges" => reply(conn, header, relay.list_bridges()).await,
            "ListPorts" => {
                let result = args::<String>(call).and_then(|b| whole(|| relay.list_ports(&b)));
                reply(conn, header, result).await
            }
            "ListInterfaces" => {
                let result = args::<String>(call).and_then(|b| whole(|| relay.list_interfaces(&b)));
                reply(conn, header, result).await
            }
            "GetRow" => {
                let result =
                    args::<(String, String)>(call).and_then(|(t, n)| relay.get_row(&t, &n));
                reply(conn, header, result).await
            }
            "Show" => match self.expensive.turn(conn, &caller, "Show").await {
                Ok(_turn) => reply(conn, header, whole(|| relay.show())).await,
                Err(e) => reply::<String>(conn, header, Err(e)).await,
            },
            "WaitFor" => {
                let result = match args::<(String, String, Vec<String>, u32)>(call) {
                    Ok((table, name, conditions, timeout)) => {
                        relay
                            .wait_for(&table, &name, conditions, timeout, &caller)
                            .await
                    }
                    Err(e) => Err(e),
                };
                reply(conn, header, result).await
            }
            "WaitForRemoval" => {
                let result = match args::<(String, String, u32)>(call) {
                    Ok((table, name, timeout)) => {
                        relay
                            .wait_for_removal(&table, &name, timeout, &caller)
                            .await
                    }
                    Err(e) => Err(e),
                };
                reply(conn, header, result).await
            }
            other => reply::<()>(conn, header, Err(unknown_method(RELAY, other))).await,
        }
    }

    async fn switch(&self, conn: &Connection, header: &Header<'_>, call: &Message, member: &str) {
        let switch = &self.switch;
        type Options = HashMap<String, OwnedVariant>;
        let who = audit::caller(conn, header).await;
        if let Err(refused) = super::polkit::authorize(conn, header).await {
            let outcome = format!("{}: {refused}", refused.name_str());
            reply::<()>(conn, header, Err(refused)).await;
            return audit::write_answered(&who, header, call, &outcome);
        }
        let result = match member {
            "AddBridge" => match args::<(String, Options)>(call) {
                Ok((name, options)) => switch.add_bridge(&name, options).await,
                Err(e) => Err(e),
            },
            "DeleteBridge" => match args::<(String, bool)>(call) {
                Ok((name, if_exists)) => switch.delete_bridge(&name, if_exists).await,
                Err(e) => Err(e),
            },
            "AddPort" => match args::<(String, String, Options)>(call) {
                Ok((bridge, port, options)) => switch.add_port(&bridge, &port, options).await,
                Err(e) => Err(e),
            },
            "DeletePort" => match args::<(String, bool)>(call) {
                Ok((port, if_exists)) => switch.delete_port(&port, if_exists).await,
                Err(e) => Err(e),
            },
            "SetVlan" => match args::<(String, u32)>(call) {
                Ok((port, tag)) => switch.set_vlan(&port, tag).await,
                Err(e) => Err(e),
            },
            "ClearVlan" => match args::<String>(call) {
                Ok(port) => switch.clear_vlan(&port).await,
                Err(e) => Err(e),
            },
            "SetExternalIds" => {
                match args::<(String, String, HashMap<String, String>, Vec<String>)>(call) {
                    Ok((table, name, set, remove)) => {
                        switch.set_external_ids(&table, &name, set, remove).await
                    }
                    Err(e) => Err(e),
                }
            }
            other => Err(unknown_method(SWITCH, other)),
        };
        let outcome = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("{}: {e}", e.name_str()),
        };
        reply(conn, header, result).await;
        audit::write_answered(&who, header, call, &outcome);
    }

    async fn openqa(&self, conn: &Connection, header: &Header<'_>, call: &Message, member: &str) {
        let Some(openqa) = &self.openqa else {
            return reply::<()>(conn, header, Err(unknown_method(OPENQA, member))).await;
        };
        let who = match member {
            "show" => String::new(),
            _ => audit::caller(conn, header).await,
        };
        let result = match member {
            "set_vlan" => match args::<(String, u32)>(call) {
                Ok((tap, vlan)) => Ok(openqa.set_vlan(&tap, vlan).await),
                Err(e) => Err(e),
            },
            "unset_vlan" => match args::<(String, u32)>(call) {
                Ok((tap, vlan)) => Ok(openqa.unset_vlan(&tap, vlan).await),
                Err(e) => Err(e),
            },
            // A read of the whole switch from the server: one turn, like `Show`.
            "show" => {
                let caller = header.sender().map(|s| s.to_string()).unwrap_or_default();
                match self.expensive.turn(conn, &caller, "show").await {
                    Ok(_turn) => Ok(openqa.show().await),
                    Err(e) => Err(e),
                }
            }
            other => Err(unknown_method(OPENQA, other)),
        };
        let outcome = match &result {
            Ok((0, _)) => Some("ok".to_owned()),
            Ok((code, message)) => Some(format!("{code} {:?}", message.trim_end())),
            Err(e) => Some(format!("{}: {e}", e.name_str())),
        }
        .filter(|_| member != "show");
        reply(conn, header, result).await;
        if let Some(outcome) = outcome {
            audit::write_answered(&who, header, call, &outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths_to_objects() {
        assert_eq!(route(ROOT_PATH, Role::Relay), Target::Root);
        assert_eq!(route("/", Role::Relay), Target::Ancestor(&["org"]));
        assert_eq!(route("/", Role::OpenQa), Target::Ancestor(&["switch"]));
        assert_eq!(
            route("/org/ovsdbus", Role::Relay),
            Target::Ancestor(&["Relay1"])
        );
        assert_eq!(route("/switch", Role::OpenQa), Target::OpenQa);
        assert_eq!(route("/switch", Role::Relay), Target::Unknown);
        // The openQA connection serves nothing of the relay's own tree.
        for path in [ROOT_PATH, "/org", "/org/ovsdbus/Relay1/port/tap0"] {
            assert_eq!(route(path, Role::OpenQa), Target::Unknown, "{path}");
        }
        assert_eq!(
            route("/org/ovsdbus/Relay1/port", Role::Relay),
            Target::Table(TableId::Port)
        );
        assert_eq!(
            route("/org/ovsdbus/Relay1/port/br_2dint_2e1", Role::Relay),
            Target::Row(TableId::Port, "br-int.1".into())
        );
        assert_eq!(
            route("/org/ovsdbus/Relay1/interface/_", Role::Relay),
            Target::Row(TableId::Interface, String::new())
        );
        // A non-canonical spelling of a name is not an object.
        assert_eq!(
            route("/org/ovsdbus/Relay1/port/_61", Role::Relay),
            Target::Unknown
        );
        for unknown in [
            "/org/ovsdbus/Relay1/root",
            "/org/ovsdbus/Relay1/port/a/b",
            "/other",
        ] {
            assert_eq!(route(unknown, Role::Relay), Target::Unknown, "{unknown}");
        }
    }

    #[test]
    fn every_shipped_method_is_routed_with_its_signature() {
        // The dispatcher decodes each method's arguments with a Rust tuple; the shipped
        // file documents a signature. They must agree, or introspection lies.
        let decoded: HashMap<(&str, &str), String> = [
            ((RELAY, "ListBridges"), String::new()),
            ((RELAY, "ListPorts"), sig::<String>()),
            ((RELAY, "ListInterfaces"), sig::<String>()),
            ((RELAY, "GetRow"), sig::<(String, String)>()),
            ((RELAY, "Show"), String::new()),
            (
                (RELAY, "WaitFor"),
                sig::<(String, String, Vec<String>, u32)>(),
            ),
            ((RELAY, "WaitForRemoval"), sig::<(String, String, u32)>()),
            (
                (SWITCH, "AddBridge"),
                sig::<(String, HashMap<String, OwnedVariant>)>(),
            ),
            ((SWITCH, "DeleteBridge"), sig::<(String, bool)>()),
            (
                (SWITCH, "AddPort"),
                sig::<(String, String, HashMap<String, OwnedVariant>)>(),
            ),
            ((SWITCH, "DeletePort"), sig::<(String, bool)>()),
            ((SWITCH, "SetVlan"), sig::<(String, u32)>()),
            ((SWITCH, "ClearVlan"), sig::<String>()),
            (
                (SWITCH, "SetExternalIds"),
                sig::<(String, String, HashMap<String, String>, Vec<String>)>(),
            ),
            ((OPENQA, "set_vlan"), sig::<(String, u32)>()),
            ((OPENQA, "unset_vlan"), sig::<(String, u32)>()),
            ((OPENQA, "show"), String::new()),
        ]
        .into_iter()
        .collect();
        let shipped = introspect::shipped_methods();
        assert_eq!(shipped.len(), decoded.len(), "{shipped:?}");
        for (interface, method, signature) in shipped {
            let ours = decoded
                .get(&(interface.as_str(), method.as_str()))
                .unwrap_or_else(|| panic!("{interface}.{method} is not dispatched"));
            assert_eq!(ours, signature, "{interface}.{method}");
        }
    }

    fn sig<T: Type>() -> String {
        let signature = T::SIGNATURE.to_string();
        // A tuple's signature is parenthesised; a body is its fields in sequence.
        signature
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .map_or(signature.clone(), str::to_owned)
    }
}
