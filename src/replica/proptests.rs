//! Model-based properties of the replica. Random operations on a small model database
//! become the `update2` messages ovsdb-server would send for them: after each message the
//! replica must hold exactly the model's rows and report exactly the rows it touched. A
//! snapshot of the model must bring a replica in any other state to the model's, and a
//! malformed message must be applied or refused whole, never panic.

use super::tests::{replica, uuid};
use super::update::parse_json;
use super::*;
use crate::ovsdb::codec::proptests::json_value;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};

type Pairs = BTreeMap<String, String>;
/// Keys of a map column set to a value or removed.
type PairChanges = BTreeMap<String, Option<String>>;

#[derive(Debug, Clone)]
struct BridgeRow {
    name: String,
    ports: BTreeSet<Uuid>,
    datapath_type: String,
    external_ids: Pairs,
}

#[derive(Debug, Clone)]
struct PortRow {
    name: String,
    interfaces: BTreeSet<Uuid>,
    tag: Option<i64>,
    trunks: BTreeSet<i64>,
    external_ids: Pairs,
}

#[derive(Debug, Clone)]
struct InterfaceRow {
    name: String,
    mtu: Option<i64>,
    external_ids: Pairs,
}

fn uuids_json(uuids: impl IntoIterator<Item = Uuid>) -> Json {
    let atoms: Vec<Json> = uuids.into_iter().map(|u| uuid(&u.to_string())).collect();
    json!(["set", atoms])
}

fn pairs_json(pairs: &Pairs) -> Json {
    let pairs: Vec<Json> = pairs.iter().map(|(k, v)| json!([k, v])).collect();
    json!(["map", pairs])
}

/// An optional column as ovsdb-server writes it: the bare value, or the empty set.
fn optional_json(value: Option<i64>) -> Json {
    value.map_or(json!(["set", []]), |v| json!(v))
}

impl BridgeRow {
    fn columns(&self) -> Json {
        json!({
            "name": self.name,
            "ports": uuids_json(self.ports.iter().copied()),
            "datapath_type": self.datapath_type,
            "external_ids": pairs_json(&self.external_ids),
        })
    }
}

impl PortRow {
    fn columns(&self) -> Json {
        json!({
            "name": self.name,
            "interfaces": uuids_json(self.interfaces.iter().copied()),
            "tag": optional_json(self.tag),
            "trunks": ["set", self.trunks],
            "external_ids": pairs_json(&self.external_ids),
        })
    }
}

impl InterfaceRow {
    fn columns(&self) -> Json {
        json!({
            "name": self.name,
            "mtu": optional_json(self.mtu),
            "external_ids": pairs_json(&self.external_ids),
        })
    }
}

/// The operation for one row in a message being written (`null` until set).
fn row_op(message: &mut Json, table: TableId, uuid: Uuid) -> &mut Json {
    &mut message[table.name()][uuid.to_string()]
}

fn insert(message: &mut Json, table: TableId, uuid: Uuid, columns: Json) {
    *row_op(message, table, uuid) = json!({"insert": columns});
}

fn delete(message: &mut Json, table: TableId, uuid: Uuid) {
    *row_op(message, table, uuid) = json!({"delete": null});
}

fn modify(message: &mut Json, table: TableId, uuid: Uuid, column: &str, diff: Json) {
    row_op(message, table, uuid)["modify"][column] = diff;
}

/// Applies `changes` to `pairs` and returns the `update2` diff saying the same: a new or
/// changed key with its new value, a removed key with its old value. Keys left as they were
/// are not mentioned, as a key sent with its current value would be deleted.
fn change_pairs(pairs: &mut Pairs, changes: &PairChanges) -> Option<Json> {
    let mut diff = Pairs::new();
    for (key, change) in changes {
        match (pairs.get(key), change) {
            (Some(old), Some(new)) if old == new => {}
            (_, Some(new)) => {
                pairs.insert(key.clone(), new.clone());
                diff.insert(key.clone(), new.clone());
            }
            (Some(_), None) => {
                let old = pairs.remove(key).expect("the key is there");
                diff.insert(key.clone(), old);
            }
            (None, None) => {}
        }
    }
    (!diff.is_empty()).then(|| pairs_json(&diff))
}

/// Set elements toggle: `toggles` added where absent and removed where present.
fn toggle<T: Ord + Copy>(set: &mut BTreeSet<T>, toggles: &BTreeSet<T>) {
    for element in toggles {
        if !set.remove(element) {
            set.insert(*element);
        }
    }
}

/// The row at position `at` among `rows`, if there is any row.
fn pick<T>(rows: &BTreeMap<Uuid, T>, at: &Index) -> Option<Uuid> {
    if rows.is_empty() {
        return None;
    }
    rows.keys().nth(at.index(rows.len())).copied()
}

/// Suffixes that make names need escaping in JSON. None starts with a digit, so the
/// counter's digits before it keep the names of different rows apart.
const FLAVOURS: [&str; 4] = ["", "-x", " \"q\\", "-ñ€😀"];

/// Operations as ovs-vsctl commands make them, one message each. Rows are picked by
/// position among those present; a step that does not fit the state (no bridge to add a
/// port to, a port's last interface to delete) is skipped.
#[derive(Debug, Clone)]
enum Step {
    AddBridge {
        flavour: &'static str,
        datapath_type: String,
        external_ids: Pairs,
    },
    AddPort {
        bridge: Index,
        flavour: &'static str,
        interfaces: usize,
        tag: Option<i64>,
        trunks: BTreeSet<i64>,
    },
    AddInterface {
        port: Index,
        flavour: &'static str,
    },
    /// With its ports and their interfaces, in the same message.
    DeleteBridge {
        bridge: Index,
    },
    DeletePort {
        port: Index,
    },
    DeleteInterface {
        interface: Index,
    },
    /// `del-port p -- add-port br p`: the names pass to new rows in one message.
    RecreatePort {
        port: Index,
    },
    MovePort {
        port: Index,
        bridge: Index,
    },
    ModifyBridge {
        bridge: Index,
        datapath_type: Option<String>,
        external_ids: PairChanges,
    },
    ModifyPort {
        port: Index,
        tag: Option<Option<i64>>,
        trunk_toggles: BTreeSet<i64>,
        external_ids: PairChanges,
    },
    ModifyInterface {
        interface: Index,
        mtu: Option<Option<i64>>,
        external_ids: PairChanges,
    },
}

/// The database the replica must mirror. Every port is on exactly one bridge and every
/// interface in exactly one port, as ovs-vswitchd keeps them.
#[derive(Debug, Clone, Default)]
struct Model {
    bridges: BTreeMap<Uuid, BridgeRow>,
    ports: BTreeMap<Uuid, PortRow>,
    interfaces: BTreeMap<Uuid, InterfaceRow>,
    /// Counts uuids and names handed out, so that each is new.
    created: u128,
}

impl Model {
    fn new_uuid(&mut self) -> Uuid {
        self.created += 1;
        Uuid(self.created)
    }

    fn new_name(&mut self, prefix: &str, flavour: &str) -> String {
        self.created += 1;
        format!("{prefix}{}{flavour}", self.created)
    }

    /// Every row of `table` as its modelled columns.
    fn rows(&self, table: TableId) -> BTreeMap<Uuid, Json> {
        match table {
            TableId::Bridge => self
                .bridges
                .iter()
                .map(|(u, r)| (*u, r.columns()))
                .collect(),
            TableId::Port => self.ports.iter().map(|(u, r)| (*u, r.columns())).collect(),
            TableId::Interface => self
                .interfaces
                .iter()
                .map(|(u, r)| (*u, r.columns()))
                .collect(),
            TableId::Root => BTreeMap::new(),
        }
    }

    fn name(&self, table: TableId, uuid: Uuid) -> Option<&str> {
        match table {
            TableId::Bridge => self.bridges.get(&uuid).map(|r| r.name.as_str()),
            TableId::Port => self.ports.get(&uuid).map(|r| r.name.as_str()),
            TableId::Interface => self.interfaces.get(&uuid).map(|r| r.name.as_str()),
            TableId::Root => None,
        }
    }

    fn parent(&self, table: TableId, uuid: Uuid) -> Option<Uuid> {
        let listing = |(parent, children): (&Uuid, &BTreeSet<Uuid>)| {
            children.contains(&uuid).then_some(*parent)
        };
        match table {
            TableId::Port => self
                .bridges
                .iter()
                .find_map(|(b, r)| listing((b, &r.ports))),
            TableId::Interface => self
                .ports
                .iter()
                .find_map(|(p, r)| listing((p, &r.interfaces))),
            _ => None,
        }
    }

    /// A row's change in this state: its name, its bridge's and its port's.
    fn change(&self, table: TableId, uuid: Uuid, kind: ChangeKind) -> RowChange {
        let name = |table, uuid: Option<Uuid>| {
            uuid.and_then(|u| self.name(table, u))
                .unwrap_or_default()
                .to_owned()
        };
        let own = name(table, Some(uuid));
        let (bridge, port) = match table {
            TableId::Bridge => (own.clone(), String::new()),
            TableId::Port => (
                name(TableId::Bridge, self.parent(table, uuid)),
                String::new(),
            ),
            _ => {
                let port = self.parent(table, uuid);
                let bridge = port.and_then(|p| self.parent(TableId::Port, p));
                (name(TableId::Bridge, bridge), name(TableId::Port, port))
            }
        };
        RowChange {
            table,
            uuid,
            name: own,
            bridge,
            port,
            kind,
        }
    }

    /// Inserts a port with new rows for `interfaces`, on no bridge yet.
    fn insert_port(
        &mut self,
        message: &mut Json,
        mut port: PortRow,
        interfaces: Vec<InterfaceRow>,
    ) -> Uuid {
        for interface in interfaces {
            let uuid = self.new_uuid();
            insert(message, TableId::Interface, uuid, interface.columns());
            self.interfaces.insert(uuid, interface);
            port.interfaces.insert(uuid);
        }
        let uuid = self.new_uuid();
        insert(message, TableId::Port, uuid, port.columns());
        self.ports.insert(uuid, port);
        uuid
    }

    /// Deletes a port and its interfaces, leaving its bridge to the caller.
    fn delete_port(&mut self, message: &mut Json, uuid: Uuid) -> (PortRow, Vec<InterfaceRow>) {
        let port = self.ports.remove(&uuid).expect("a port of the model");
        delete(message, TableId::Port, uuid);
        let interfaces = port
            .interfaces
            .iter()
            .map(|&interface| {
                delete(message, TableId::Interface, interface);
                self.interfaces.remove(&interface).expect("its interface")
            })
            .collect();
        (port, interfaces)
    }

    fn bridge_of(&self, port: Uuid) -> Uuid {
        self.parent(TableId::Port, port)
            .expect("every port is on a bridge")
    }

    fn port_of(&self, interface: Uuid) -> Uuid {
        self.parent(TableId::Interface, interface)
            .expect("every interface is in a port")
    }

    fn bridge_mut(&mut self, uuid: Uuid) -> &mut BridgeRow {
        self.bridges.get_mut(&uuid).expect("a bridge of the model")
    }

    fn port_mut(&mut self, uuid: Uuid) -> &mut PortRow {
        self.ports.get_mut(&uuid).expect("a port of the model")
    }

    /// Applies `step` and returns the message saying so, or `None` when it does not fit.
    fn step(&mut self, step: &Step) -> Option<Json> {
        let mut message = json!({});
        match step {
            Step::AddBridge {
                flavour,
                datapath_type,
                external_ids,
            } => {
                let bridge = BridgeRow {
                    name: self.new_name("br", flavour),
                    ports: BTreeSet::new(),
                    datapath_type: datapath_type.clone(),
                    external_ids: external_ids.clone(),
                };
                let uuid = self.new_uuid();
                insert(&mut message, TableId::Bridge, uuid, bridge.columns());
                self.bridges.insert(uuid, bridge);
            }
            Step::AddPort {
                bridge,
                flavour,
                interfaces,
                tag,
                trunks,
            } => {
                let bridge = pick(&self.bridges, bridge)?;
                let port = PortRow {
                    name: self.new_name("p", flavour),
                    interfaces: BTreeSet::new(),
                    tag: *tag,
                    trunks: trunks.clone(),
                    external_ids: Pairs::new(),
                };
                let interfaces = (0..*interfaces)
                    .map(|_| InterfaceRow {
                        name: self.new_name("i", flavour),
                        mtu: None,
                        external_ids: Pairs::new(),
                    })
                    .collect();
                let port = self.insert_port(&mut message, port, interfaces);
                self.bridge_mut(bridge).ports.insert(port);
                modify(
                    &mut message,
                    TableId::Bridge,
                    bridge,
                    "ports",
                    uuids_json([port]),
                );
            }
            Step::AddInterface { port, flavour } => {
                let port = pick(&self.ports, port)?;
                let interface = InterfaceRow {
                    name: self.new_name("i", flavour),
                    mtu: None,
                    external_ids: Pairs::new(),
                };
                let uuid = self.new_uuid();
                insert(&mut message, TableId::Interface, uuid, interface.columns());
                self.interfaces.insert(uuid, interface);
                self.port_mut(port).interfaces.insert(uuid);
                let toggled = uuids_json([uuid]);
                modify(&mut message, TableId::Port, port, "interfaces", toggled);
            }
            Step::DeleteBridge { bridge } => {
                let uuid = pick(&self.bridges, bridge)?;
                let bridge = self.bridges.remove(&uuid).expect("the bridge picked");
                delete(&mut message, TableId::Bridge, uuid);
                for port in bridge.ports {
                    self.delete_port(&mut message, port);
                }
            }
            Step::DeletePort { port } => {
                let port = pick(&self.ports, port)?;
                let bridge = self.bridge_of(port);
                self.delete_port(&mut message, port);
                self.bridge_mut(bridge).ports.remove(&port);
                modify(
                    &mut message,
                    TableId::Bridge,
                    bridge,
                    "ports",
                    uuids_json([port]),
                );
            }
            Step::DeleteInterface { interface } => {
                let interface = pick(&self.interfaces, interface)?;
                let port = self.port_of(interface);
                let interfaces = &mut self.port_mut(port).interfaces;
                // A port keeps at least one interface (the schema's minimum).
                if interfaces.len() < 2 {
                    return None;
                }
                interfaces.remove(&interface);
                self.interfaces.remove(&interface);
                delete(&mut message, TableId::Interface, interface);
                let toggled = uuids_json([interface]);
                modify(&mut message, TableId::Port, port, "interfaces", toggled);
            }
            Step::RecreatePort { port } => {
                let old = pick(&self.ports, port)?;
                let bridge = self.bridge_of(old);
                let (port, interfaces) = self.delete_port(&mut message, old);
                let port = PortRow {
                    interfaces: BTreeSet::new(),
                    ..port
                };
                let new = self.insert_port(&mut message, port, interfaces);
                let ports = &mut self.bridge_mut(bridge).ports;
                ports.remove(&old);
                ports.insert(new);
                modify(
                    &mut message,
                    TableId::Bridge,
                    bridge,
                    "ports",
                    uuids_json([old, new]),
                );
            }
            Step::MovePort { port, bridge } => {
                let port = pick(&self.ports, port)?;
                let (from, to) = (self.bridge_of(port), pick(&self.bridges, bridge)?);
                if from == to {
                    return None;
                }
                self.bridge_mut(from).ports.remove(&port);
                self.bridge_mut(to).ports.insert(port);
                for bridge in [from, to] {
                    modify(
                        &mut message,
                        TableId::Bridge,
                        bridge,
                        "ports",
                        uuids_json([port]),
                    );
                }
            }
            Step::ModifyBridge {
                bridge,
                datapath_type,
                external_ids,
            } => {
                let uuid = pick(&self.bridges, bridge)?;
                let bridge = self.bridge_mut(uuid);
                if let Some(datapath_type) = datapath_type {
                    bridge.datapath_type = datapath_type.clone();
                    modify(
                        &mut message,
                        TableId::Bridge,
                        uuid,
                        "datapath_type",
                        json!(datapath_type),
                    );
                }
                if let Some(diff) = change_pairs(&mut bridge.external_ids, external_ids) {
                    modify(&mut message, TableId::Bridge, uuid, "external_ids", diff);
                }
            }
            Step::ModifyPort {
                port,
                tag,
                trunk_toggles,
                external_ids,
            } => {
                let uuid = pick(&self.ports, port)?;
                let port = self.port_mut(uuid);
                if let Some(tag) = tag {
                    port.tag = *tag;
                    modify(
                        &mut message,
                        TableId::Port,
                        uuid,
                        "tag",
                        optional_json(*tag),
                    );
                }
                if !trunk_toggles.is_empty() {
                    toggle(&mut port.trunks, trunk_toggles);
                    modify(
                        &mut message,
                        TableId::Port,
                        uuid,
                        "trunks",
                        json!(["set", trunk_toggles]),
                    );
                }
                if let Some(diff) = change_pairs(&mut port.external_ids, external_ids) {
                    modify(&mut message, TableId::Port, uuid, "external_ids", diff);
                }
            }
            Step::ModifyInterface {
                interface,
                mtu,
                external_ids,
            } => {
                let uuid = pick(&self.interfaces, interface)?;
                let interface = self
                    .interfaces
                    .get_mut(&uuid)
                    .expect("the interface picked");
                if let Some(mtu) = mtu {
                    interface.mtu = *mtu;
                    modify(
                        &mut message,
                        TableId::Interface,
                        uuid,
                        "mtu",
                        optional_json(*mtu),
                    );
                }
                if let Some(diff) = change_pairs(&mut interface.external_ids, external_ids) {
                    modify(&mut message, TableId::Interface, uuid, "external_ids", diff);
                }
            }
        }
        Some(message)
    }

    /// The model as a monitor reply: every row `initial`.
    fn snapshot(&self) -> Json {
        let mut message = json!({});
        for table in TableId::PUBLISHED {
            for (uuid, columns) in self.rows(table) {
                *row_op(&mut message, table, uuid) = json!({"initial": columns});
            }
        }
        message
    }
}

/// A model row as the replica stores it: the modelled columns, the others at their defaults.
fn expected_row(layout: &Layout, table: TableId, columns: &Json) -> Row {
    layout
        .table(table)
        .columns
        .iter()
        .map(|column| match columns.get(&column.name) {
            Some(value) => {
                Datum::from_json(&column.ty, value).expect("the model writes valid values")
            }
            None => Datum::default_of(&column.ty),
        })
        .collect()
}

/// What taking the replica from `before` to `after` must report. A row that is new, gone or
/// renamed (another object: removed, then added) carries the names of the state it is in;
/// a row with other values is `Changed`. Removed Interface→Port→Bridge, then Added
/// Bridge→Port→Interface, then Changed Bridge→Port→Interface, by name within each.
fn expected_changes(layout: &Layout, before: &Model, after: &Model) -> ChangeSet {
    use TableId::{Bridge, Interface, Port};
    let (mut removed, mut added, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    for table in TableId::PUBLISHED {
        let (old_rows, new_rows) = (before.rows(table), after.rows(table));
        for (&uuid, old) in &old_rows {
            let old_row = expected_row(layout, table, old);
            match new_rows.get(&uuid) {
                Some(new) if new["name"] == old["name"] => {
                    let new_row = expected_row(layout, table, new);
                    let columns: Vec<usize> = (0..new_row.len())
                        .filter(|&i| old_row[i] != new_row[i])
                        .collect();
                    if !columns.is_empty() {
                        let kind = ChangeKind::Changed {
                            old: old_row,
                            new: new_row,
                            columns,
                        };
                        changed.push(after.change(table, uuid, kind));
                    }
                }
                _ => removed.push(before.change(table, uuid, ChangeKind::Removed { row: old_row })),
            }
        }
        for (&uuid, new) in &new_rows {
            if old_rows
                .get(&uuid)
                .is_none_or(|old| old["name"] != new["name"])
            {
                let row = expected_row(layout, table, new);
                added.push(after.change(table, uuid, ChangeKind::Added { row }));
            }
        }
    }
    let in_order = |changes: &mut Vec<RowChange>, tables: [TableId; 3]| {
        changes.sort_by_key(|c| (tables.iter().position(|&t| t == c.table), c.name.clone()));
    };
    in_order(&mut removed, [Interface, Port, Bridge]);
    in_order(&mut added, [Bridge, Port, Interface]);
    in_order(&mut changed, [Bridge, Port, Interface]);
    ChangeSet {
        changes: [removed, added, changed].concat(),
        root_changed: false,
    }
}

/// The replica holds exactly the model's rows, finds them by name, knows their parents and
/// keeps no index entry for a row that is gone.
fn assert_mirrors(replica: &Replica, model: &Model) {
    for table in TableId::PUBLISHED {
        let rows = model.rows(table);
        assert_eq!(replica.len(table), rows.len(), "{table} rows");
        assert_eq!(
            replica.by_name[table.index()].len(),
            rows.len(),
            "{table} names"
        );
        for (&uuid, columns) in &rows {
            let name = columns["name"].as_str().expect("a name");
            let (found, row) = replica
                .find(table, name)
                .unwrap_or_else(|| panic!("{table} {name:?} not found"));
            assert_eq!(found, uuid, "{table} {name:?}");
            assert_eq!(
                row,
                &expected_row(replica.layout(), table, columns),
                "{table} {name:?}"
            );
            let parent = replica.parent(table, uuid);
            assert_eq!(
                parent,
                model.parent(table, uuid),
                "parent of {table} {name:?}"
            );
        }
    }
    assert_eq!(replica.port_bridge.len(), model.ports.len(), "port parents");
    assert_eq!(
        replica.iface_port.len(),
        model.interfaces.len(),
        "interface parents"
    );
}

/// Sends each step's message to the replica, which must follow the model exactly.
fn run(steps: &[Step], model: &mut Model, replica: &mut Replica) {
    for step in steps {
        let before = model.clone();
        let Some(message) = model.step(step) else {
            continue;
        };
        let update = parse_json(replica.layout(), message.clone())
            .unwrap_or_else(|e| panic!("{message}: {e}"));
        let changes = replica
            .apply(update)
            .unwrap_or_else(|e| panic!("{message}: {e}"));
        let expected = expected_changes(replica.layout(), &before, model);
        assert_eq!(changes, expected, "{message}");
        assert_mirrors(replica, model);
    }
}

fn key() -> impl Strategy<Value = String> {
    select(vec!["a", "b", "c"]).prop_map(str::to_owned)
}

/// Few values, so that changes often meet the value a key already has.
fn value() -> impl Strategy<Value = String> {
    select(vec!["1", "2", "q\"uote", "back\\slash", "ñ€😀"]).prop_map(str::to_owned)
}

fn pairs() -> impl Strategy<Value = Pairs> {
    prop::collection::btree_map(key(), value(), 0..3)
}

fn pair_changes() -> impl Strategy<Value = PairChanges> {
    prop::collection::btree_map(key(), prop::option::of(value()), 0..3)
}

fn datapath_type() -> impl Strategy<Value = String> {
    select(vec!["", "system", "netdev"]).prop_map(str::to_owned)
}

fn tag() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(prop_oneof![0..3i64, 4093..4096i64])
}

fn trunks() -> impl Strategy<Value = BTreeSet<i64>> {
    prop::collection::btree_set(0..6i64, 0..3)
}

fn flavour() -> impl Strategy<Value = &'static str> {
    select(FLAVOURS.to_vec())
}

fn add_bridge() -> impl Strategy<Value = Step> {
    (flavour(), datapath_type(), pairs()).prop_map(|(flavour, datapath_type, external_ids)| {
        Step::AddBridge {
            flavour,
            datapath_type,
            external_ids,
        }
    })
}

fn add_port() -> impl Strategy<Value = Step> {
    (any::<Index>(), flavour(), 1..=3usize, tag(), trunks()).prop_map(
        |(bridge, flavour, interfaces, tag, trunks)| Step::AddPort {
            bridge,
            flavour,
            interfaces,
            tag,
            trunks,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    let row = any::<Index>;
    let mtu = prop::option::of(prop::option::of(1500..1502i64));
    prop_oneof![
        3 => add_bridge(),
        4 => add_port(),
        1 => (row(), flavour()).prop_map(|(port, flavour)| Step::AddInterface { port, flavour }),
        1 => row().prop_map(|bridge| Step::DeleteBridge { bridge }),
        1 => row().prop_map(|port| Step::DeletePort { port }),
        1 => row().prop_map(|interface| Step::DeleteInterface { interface }),
        1 => row().prop_map(|port| Step::RecreatePort { port }),
        1 => (row(), row()).prop_map(|(port, bridge)| Step::MovePort { port, bridge }),
        2 => (row(), prop::option::of(datapath_type()), pair_changes()).prop_map(
            |(bridge, datapath_type, external_ids)| Step::ModifyBridge {
                bridge, datapath_type, external_ids,
            },
        ),
        3 => (row(), prop::option::of(tag()), trunks(), pair_changes()).prop_map(
            |(port, tag, trunk_toggles, external_ids)| Step::ModifyPort {
                port, tag, trunk_toggles, external_ids,
            },
        ),
        2 => (row(), mtu, pair_changes()).prop_map(|(interface, mtu, external_ids)| {
            Step::ModifyInterface { interface, mtu, external_ids }
        }),
    ]
}

fn steps(most: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 0..most)
}

/// A bridge with a port first, so that most steps find rows to work on, then any steps.
fn history(most: usize) -> impl Strategy<Value = Vec<Step>> {
    (add_bridge(), add_port(), steps(most))
        .prop_map(|(bridge, port, rest)| [vec![bridge, port], rest].concat())
}

/// A way to damage a valid message, in its JSON.
#[derive(Debug, Clone)]
enum Mutation {
    /// Any value in it replaced: wrong types, out-of-range numbers, garbage shapes.
    Replace { node: Index, with: Json },
    /// A member of an object or an element of an array dropped.
    Remove { node: Index, member: Index },
    /// A member added to an object, named like a table, an operation, a column or a row.
    Add {
        node: Index,
        key: &'static str,
        value: Json,
    },
    /// A row operation moved to the uuid of a row of the replica (of any table), or to one
    /// no row has: inserts of rows that exist, changes to rows that do not.
    Retarget { row: Index, to: Option<Index> },
    /// A row operation of another kind, keeping its columns.
    Rekind { row: Index, kind: &'static str },
    /// A row given a name another row of its table has (a duplicate, or a rename), or a
    /// new one (a rename in a modify).
    Rename { row: Index, to: Option<Index> },
}

/// A way to damage a message's text, which its JSON cannot hold.
#[derive(Debug, Clone)]
enum TextDamage {
    None,
    /// A table's member written twice (serde_json reads both): its rows twice in one message.
    RepeatedTable(Index),
    /// The text cut short.
    Cut(Index),
}

/// JSON Pointers to every value in `json`, itself first.
fn pointers(json: &Json) -> Vec<String> {
    fn walk(json: &Json, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match json {
            Json::Object(members) => {
                for (key, value) in members {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(value, format!("{at}/{key}"), out);
                }
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, String::new(), &mut out);
    out
}

/// The value at position `at` among all values in `json`, itself included.
fn node_mut<'a>(json: &'a mut Json, at: &Index) -> &'a mut Json {
    let pointers = pointers(json);
    let pointer = &pointers[at.index(pointers.len())];
    json.pointer_mut(pointer)
        .expect("a pointer to one of its values")
}

/// The (table, uuid) of each row operation, while the message still has that shape.
fn row_ops(message: &Json) -> Vec<(String, String)> {
    let Some(tables) = message.as_object() else {
        return Vec::new();
    };
    tables
        .iter()
        .filter_map(|(table, rows)| Some((table, rows.as_object()?)))
        .flat_map(|(table, rows)| rows.keys().map(|uuid| (table.clone(), uuid.clone())))
        .collect()
}

/// The uuid of a row of the replica, at position `at` among all of its rows.
fn replica_uuid(replica: &Replica, at: &Index) -> Option<Uuid> {
    let uuids: Vec<Uuid> = TableId::ALL
        .into_iter()
        .flat_map(|table| replica.rows(table).map(|(uuid, _)| uuid))
        .collect();
    (!uuids.is_empty()).then(|| uuids[at.index(uuids.len())])
}

impl Mutation {
    fn apply(&self, message: &mut Json, replica: &Replica) {
        match self {
            Mutation::Replace { node, with } => *node_mut(message, node) = with.clone(),
            Mutation::Remove { node, member } => match node_mut(message, node) {
                Json::Object(members) if !members.is_empty() => {
                    let key = members.keys().nth(member.index(members.len())).cloned();
                    members.remove(&key.expect("a member at that position"));
                }
                Json::Array(items) if !items.is_empty() => {
                    items.remove(member.index(items.len()));
                }
                _ => {}
            },
            Mutation::Add { node, key, value } => {
                if let Json::Object(members) = node_mut(message, node) {
                    members.insert((*key).to_owned(), value.clone());
                }
            }
            Mutation::Retarget { row, to } => {
                let Some((table, uuid)) = pick_row_op(message, row) else {
                    return;
                };
                let to = to.as_ref().and_then(|at| replica_uuid(replica, at));
                let to = to.map_or_else(|| UNKNOWN_UUID.to_owned(), |uuid| uuid.to_string());
                let rows = message[&table].as_object_mut().expect("a table of rows");
                let op = rows.remove(&uuid).expect("the row picked");
                rows.insert(to, op);
            }
            Mutation::Rekind { row, kind } => {
                let Some((table, uuid)) = pick_row_op(message, row) else {
                    return;
                };
                let op = &mut message[&table][&uuid];
                let columns = match op.as_object().and_then(|op| op.values().next()) {
                    Some(columns @ Json::Object(_)) => columns.clone(),
                    _ => json!({}),
                };
                *op = json!({ *kind: columns });
            }
            Mutation::Rename { row, to } => {
                let Some((table, uuid)) = pick_row_op(message, row) else {
                    return;
                };
                let names: Vec<&str> = TableId::PUBLISHED
                    .into_iter()
                    .filter(|t| t.name() == table)
                    .flat_map(|t| replica.rows(t).map(move |(_, row)| replica.name_of(t, row)))
                    .collect();
                let name = match to {
                    Some(at) if !names.is_empty() => names[at.index(names.len())],
                    _ => "renamed",
                };
                let op = message[&table][&uuid].as_object_mut();
                if let Some(Json::Object(columns)) = op.and_then(|op| op.values_mut().next()) {
                    columns.insert("name".to_owned(), json!(name));
                }
            }
        }
    }
}

impl TextDamage {
    fn write(&self, message: &Json) -> String {
        let text = message.to_string();
        match (self, message) {
            (TextDamage::RepeatedTable(which), Json::Object(tables)) if !tables.is_empty() => {
                let (table, rows) = tables
                    .iter()
                    .nth(which.index(tables.len()))
                    .expect("a table");
                let repeated = json!({ table: rows }).to_string();
                // `{…}` and `{"table":…}` make `{…,"table":…}`.
                format!("{},{}", &text[..text.len() - 1], &repeated[1..])
            }
            (TextDamage::Cut(at), _) => {
                String::from_utf8_lossy(&text.as_bytes()[..at.index(text.len() + 1)]).into_owned()
            }
            _ => text,
        }
    }
}

/// A uuid no row of the model ever has (they count up from 1).
const UNKNOWN_UUID: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/// The (table, uuid) of the row operation at position `at`, if the message still has rows.
fn pick_row_op(message: &Json, at: &Index) -> Option<(String, String)> {
    let rows = row_ops(message);
    (!rows.is_empty()).then(|| rows[at.index(rows.len())].clone())
}

/// Atoms of every type OVSDB has, in and around the schema's ranges (Port.tag is 0..=4095),
/// naming rows that exist or not, or malformed.
fn atom() -> impl Strategy<Value = Json> {
    prop_oneof![
        prop_oneof![-2..4100i64, any::<i64>()].prop_map(Json::from),
        Just(json!(1.5)),
        any::<bool>().prop_map(Json::from),
        // D-Bus cannot carry NUL, so a string with one is refused.
        prop_oneof![value(), Just(String::new()), Just("nul\0".to_owned())].prop_map(Json::from),
        (0..8u128).prop_map(|n| uuid(&Uuid(n).to_string())),
        Just(json!(["uuid", "not-a-uuid"])),
    ]
}

/// Values for any column: sets and maps of any atoms, bare atoms, and anything else.
fn any_value() -> impl Strategy<Value = Json> {
    prop_oneof![
        atom(),
        prop::collection::vec(atom(), 0..3).prop_map(|atoms| json!(["set", atoms])),
        prop::collection::vec((atom(), atom()), 0..3).prop_map(|pairs| {
            let pairs: Vec<Json> = pairs.into_iter().map(|(k, v)| json!([k, v])).collect();
            json!(["map", pairs])
        }),
        json_value(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let keys = select(vec![
        "Bridge",
        "Port",
        "Interface",
        "Open_vSwitch",
        "Mirror",
        "insert",
        "initial",
        "modify",
        "delete",
        "name",
        "ports",
        "interfaces",
        "tag",
        "trunks",
        "mtu",
        "external_ids",
        "datapath_type",
        "no_such_column",
        "00000000-0000-0000-0000-000000000001",
    ]);
    let kinds = select(vec!["insert", "initial", "modify", "delete", "upsert"]);
    prop_oneof![
        (any::<Index>(), any_value()).prop_map(|(node, with)| Mutation::Replace { node, with }),
        (any::<Index>(), any::<Index>())
            .prop_map(|(node, member)| Mutation::Remove { node, member }),
        (any::<Index>(), keys, any_value()).prop_map(|(node, key, value)| Mutation::Add {
            node,
            key,
            value
        }),
        (any::<Index>(), prop::option::of(any::<Index>()))
            .prop_map(|(row, to)| Mutation::Retarget { row, to }),
        (any::<Index>(), kinds).prop_map(|(row, kind)| Mutation::Rekind { row, kind }),
        (any::<Index>(), prop::option::of(any::<Index>()))
            .prop_map(|(row, to)| Mutation::Rename { row, to }),
    ]
}

fn text_damage() -> impl Strategy<Value = TextDamage> {
    prop_oneof![
        2 => Just(TextDamage::None),
        2 => any::<Index>().prop_map(TextDamage::RepeatedTable),
        1 => any::<Index>().prop_map(TextDamage::Cut),
    ]
}

/// Same rows and indexes: what a refused message must leave behind.
fn same_state(a: &Replica, b: &Replica) -> bool {
    a.tables == b.tables
        && a.by_name == b.by_name
        && a.port_bridge == b.port_bridge
        && a.iface_port == b.iface_port
}

/// `change` either applies, leaving every row findable by its name and no other name
/// indexed, or is refused and leaves the replica as it was.
fn assert_applied_or_refused_whole(
    replica: &mut Replica,
    change: impl FnOnce(&mut Replica) -> Result<ChangeSet, Inconsistency>,
) {
    let before = replica.clone();
    match change(replica) {
        Ok(_) => {
            for table in TableId::PUBLISHED {
                let names = &replica.by_name[table.index()];
                assert_eq!(names.len(), replica.len(table), "{table} names");
                for (uuid, row) in replica.rows(table) {
                    assert_eq!(names.get(replica.name_of(table, row)), Some(&uuid));
                }
            }
        }
        Err(error) => assert!(same_state(&before, replica), "{error} changed the replica"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_leaves_the_replica_equal_to_the_model(steps in history(32)) {
        run(&steps, &mut Model::default(), &mut replica());
    }

    /// The replica and the server share a history, then each goes on alone: rows in both
    /// stay, change or go, new ones come, and uuids recur under other names.
    #[test]
    fn a_snapshot_brings_any_replica_to_the_model(
        common in history(16),
        ours in steps(12),
        theirs in steps(12),
    ) {
        let (mut ours_model, mut replica) = (Model::default(), replica());
        run(&common, &mut ours_model, &mut replica);
        let mut theirs_model = ours_model.clone();
        run(&ours, &mut ours_model, &mut replica);
        for step in &theirs {
            theirs_model.step(step);
        }
        let snapshot = parse_json(replica.layout(), theirs_model.snapshot()).expect("a snapshot");

        let changes = replica.replace(snapshot.clone()).expect("a consistent snapshot");
        let expected = expected_changes(replica.layout(), &ours_model, &theirs_model);
        prop_assert_eq!(changes, expected);
        assert_mirrors(&replica, &theirs_model);
        let again = replica.replace(snapshot).expect("a consistent snapshot");
        prop_assert!(again.is_empty(), "{:?}", again);
    }


    #[test]
    fn malformed_messages_apply_or_are_refused_whole_never_panic(
        history in history(12),
        candidates in prop::collection::vec(step(), 1..8),
        mutations in prop::collection::vec(mutation(), 1..4),
        damage in text_damage(),
    ) {
        let (mut model, mut replica) = (Model::default(), replica());
        run(&history, &mut model, &mut replica);
        // The first step that fits: a message with rows in it to damage.
        let mut message = candidates
            .iter()
            .find_map(|step| model.step(step))
            .unwrap_or_else(|| json!({}));
        for mutation in &mutations {
            mutation.apply(&mut message, &replica);
        }
        let Ok(update) = Update::parse(replica.layout(), &damage.write(&message)) else {
            return Ok(());
        };
        let mut resynced = replica.clone();
        assert_applied_or_refused_whole(&mut replica, |r| r.apply(update.clone()));
        assert_applied_or_refused_whole(&mut resynced, |r| r.replace(update));
    }
}
