//! Answers to the read methods (SPEC §6), computed from the replica under its read lock.

use super::error::MethodError;
use super::objects::row_path;
use super::value::{VariantDict, columns_dict};
use crate::ovsdb::datum::{Datum, Uuid};
use crate::ovsdb::schema::ColumnType;
use crate::replica::layout::TableId;
use crate::replica::{Replica, Row};
use serde_json::{Map, Value as Json, json};
use zbus::{OwnedObjectPath, Variant};

pub type BridgeEntry = (String, String, OwnedObjectPath);
pub type PortEntry = (String, String, String, OwnedObjectPath);
pub type InterfaceEntry = (String, String, String, String, OwnedObjectPath);

pub fn table_arg(table: &str) -> Result<TableId, MethodError> {
    TableId::parse_published(table).ok_or_else(|| {
        MethodError::InvalidArgs(format!("{table:?} is not one of Bridge, Port, Interface"))
    })
}

/// Every mirrored column plus `_uuid`, as `GetRow` and `WaitFor` return a row.
pub fn row_dict(
    replica: &Replica,
    table: TableId,
    uuid: Uuid,
    row: &Row,
) -> zbus::Result<VariantDict> {
    let layout = replica.layout().table(table);
    let mut dict = columns_dict(layout, row, 0..layout.columns.len())?;
    dict.insert("_uuid".into(), Variant::from(uuid.to_string()));
    Ok(dict)
}

pub fn get_row(replica: &Replica, table: TableId, name: &str) -> Result<VariantDict, MethodError> {
    let (uuid, row) = replica
        .find(table, name)
        .ok_or_else(|| MethodError::NotFound(format!("no {table} named {name:?}")))?;
    Ok(row_dict(replica, table, uuid, row)?)
}

fn sorted_rows(replica: &Replica, table: TableId) -> Vec<(&str, Uuid, &Row)> {
    let mut rows: Vec<_> = replica
        .rows(table)
        .map(|(uuid, row)| (replica.name_of(table, row), uuid, row))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    rows
}

/// The bridge's uuid for a `bridge` argument; `""` means every bridge.
fn bridge_filter(replica: &Replica, bridge: &str) -> Result<Option<Uuid>, MethodError> {
    if bridge.is_empty() {
        return Ok(None);
    }
    replica
        .find(TableId::Bridge, bridge)
        .map(|(uuid, _)| Some(uuid))
        .ok_or_else(|| MethodError::NotFound(format!("no bridge named {bridge:?}")))
}

fn parent_name(replica: &Replica, table: TableId, uuid: Option<Uuid>) -> String {
    uuid.and_then(|u| replica.row(table, u))
        .map(|r| replica.name_of(table, r))
        .unwrap_or_default()
        .to_owned()
}

pub fn list_bridges(replica: &Replica) -> Vec<BridgeEntry> {
    sorted_rows(replica, TableId::Bridge)
        .into_iter()
        .map(|(name, uuid, _)| {
            let path = row_path(TableId::Bridge, name);
            (name.to_owned(), uuid.to_string(), path)
        })
        .collect()
}

pub fn list_ports(replica: &Replica, bridge: &str) -> Result<Vec<PortEntry>, MethodError> {
    let only = bridge_filter(replica, bridge)?;
    Ok(sorted_rows(replica, TableId::Port)
        .into_iter()
        .filter_map(|(name, uuid, _)| {
            let parent = replica.parent(TableId::Port, uuid);
            if only.is_some() && parent != only {
                return None;
            }
            let path = row_path(TableId::Port, name);
            Some((
                name.to_owned(),
                parent_name(replica, TableId::Bridge, parent),
                uuid.to_string(),
                path,
            ))
        })
        .collect())
}

pub fn list_interfaces(
    replica: &Replica,
    bridge: &str,
) -> Result<Vec<InterfaceEntry>, MethodError> {
    let only = bridge_filter(replica, bridge)?;
    Ok(sorted_rows(replica, TableId::Interface)
        .into_iter()
        .filter_map(|(name, uuid, _)| {
            let port = replica.parent(TableId::Interface, uuid);
            let bridge = port.and_then(|p| replica.parent(TableId::Port, p));
            if only.is_some() && bridge != only {
                return None;
            }
            let path = row_path(TableId::Interface, name);
            Some((
                name.to_owned(),
                parent_name(replica, TableId::Port, port),
                parent_name(replica, TableId::Bridge, bridge),
                uuid.to_string(),
                path,
            ))
        })
        .collect())
}

/// A value as plain JSON: the atom for a scalar, the atom or `null` for an optional, an
/// array for a set, an object for a map.
fn plain(ty: &ColumnType, datum: &Datum) -> Json {
    match datum {
        Datum::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), v.to_json()))
                .collect(),
        ),
        // As on D-Bus (SPEC §3): a scalar bare, an optional value like a set of 0 or 1, so
        // `show --json` and `watch`/`get --json` write a column the same way.
        Datum::Set(set) if ty.is_scalar() => set.first().map(|a| a.to_json()).unwrap_or(Json::Null),
        Datum::Set(set) => Json::Array(set.iter().map(|a| a.to_json()).collect()),
    }
}

fn key_columns(
    replica: &Replica,
    table: TableId,
    uuid: Uuid,
    row: &Row,
    columns: &[&str],
) -> Map<String, Json> {
    let layout = replica.layout().table(table);
    let mut out = Map::new();
    out.insert("name".into(), json!(replica.name_of(table, row)));
    out.insert("uuid".into(), json!(uuid.to_string()));
    for column in columns {
        if let Some(i) = layout.column_index(column) {
            out.insert((*column).to_owned(), plain(&layout.columns[i].ty, &row[i]));
        }
    }
    out
}

fn children<'r>(
    replica: &'r Replica,
    table: TableId,
    row: &Row,
    column: &str,
    child: TableId,
) -> Vec<(Uuid, &'r Row)> {
    let mut rows: Vec<_> = replica
        .column(table, row, column)
        .map(|d| {
            d.uuids()
                .filter_map(|u| replica.row(child, u).map(|r| (u, r)))
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by_key(|(_, r)| replica.name_of(child, r));
    rows
}

/// `Show()`: bridges → ports → interfaces with their key columns, as JSON.
pub fn show(replica: &Replica) -> Json {
    let bridges: Vec<Json> = sorted_rows(replica, TableId::Bridge)
        .into_iter()
        .map(|(_, uuid, row)| {
            let mut bridge = key_columns(
                replica,
                TableId::Bridge,
                uuid,
                row,
                &["datapath_type", "fail_mode", "controller"],
            );
            let ports: Vec<Json> = children(replica, TableId::Bridge, row, "ports", TableId::Port)
                .into_iter()
                .map(|(port_uuid, port_row)| {
                    let mut port = key_columns(
                        replica,
                        TableId::Port,
                        port_uuid,
                        port_row,
                        &["tag", "trunks", "vlan_mode", "bond_mode"],
                    );
                    let interfaces: Vec<Json> = children(
                        replica,
                        TableId::Port,
                        port_row,
                        "interfaces",
                        TableId::Interface,
                    )
                    .into_iter()
                    .map(|(iface_uuid, iface_row)| {
                        Json::Object(key_columns(
                            replica,
                            TableId::Interface,
                            iface_uuid,
                            iface_row,
                            &[
                                "type",
                                "ofport",
                                "link_state",
                                "admin_state",
                                "mac_in_use",
                                "mtu",
                                "options",
                                "error",
                            ],
                        ))
                    })
                    .collect();
                    port.insert("interfaces".into(), Json::Array(interfaces));
                    Json::Object(port)
                })
                .collect();
            bridge.insert("ports".into(), Json::Array(ports));
            Json::Object(bridge)
        })
        .collect();
    let root = replica
        .rows(TableId::Root)
        .next()
        .map(|(uuid, _)| uuid.to_string());
    json!({
        "uuid": root.unwrap_or_default(),
        "system_id": replica.root_string("external_ids", Some("system-id")),
        "ovs_version": replica.root_string("ovs_version", None),
        "bridges": bridges,
    })
}
