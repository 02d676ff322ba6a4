use super::layout::ColumnSelection;
use super::layout::tests::test_schema;
use super::*;
use serde_json::{Value as Json, json};

const BR: &str = "b0000000-0000-0000-0000-000000000001";
const BR2: &str = "b0000000-0000-0000-0000-000000000002";
const P1: &str = "10000000-0000-0000-0000-000000000001";
const P2: &str = "10000000-0000-0000-0000-000000000002";
const I1: &str = "20000000-0000-0000-0000-000000000001";
const I2: &str = "20000000-0000-0000-0000-000000000002";

pub(super) fn uuid(text: &str) -> Json {
    json!(["uuid", text])
}

pub(super) fn replica() -> Replica {
    Replica::new(Arc::new(
        Layout::new(&test_schema(), &ColumnSelection::default()).unwrap(),
    ))
}

fn apply(replica: &mut Replica, json: Json) -> Result<ChangeSet, Inconsistency> {
    let update = crate::replica::update::parse_json(replica.layout(), json).unwrap();
    replica.apply(update)
}

/// br0 with port p1 holding interface i1, in one transaction as `add-br` + `add-port` do.
fn populated() -> Replica {
    let mut r = replica();
    apply(
        &mut r,
        json!({
            "Bridge": {BR: {"insert": {"name": "br0", "ports": uuid(P1)}}},
            "Port": {P1: {"insert": {"name": "p1", "interfaces": uuid(I1)}}},
            "Interface": {I1: {"insert": {"name": "i1"}}}
        }),
    )
    .unwrap();
    r
}

fn summary(changes: &ChangeSet) -> Vec<String> {
    changes
        .changes
        .iter()
        .map(|c| {
            format!(
                "{}{} {} bridge={} port={}",
                c.table,
                c.kind.op(),
                c.name,
                c.bridge,
                c.port
            )
        })
        .collect()
}

fn column(r: &Replica, table: TableId, name: &str, col: &str) -> Json {
    let (_, row) = r.find(table, name).unwrap();
    r.column(table, row, col).unwrap().to_json()
}

#[test]
fn an_insert_fills_omitted_columns_with_defaults() {
    let mut r = replica();
    // Text, not `json!`: a repeated member has to reach the parser.
    let text =
        format!(r#"{{"Port": {{"{P1}": {{"insert": {{"tag": 5, "name": "p1", "tag": 6}}}}}}}}"#);
    let update = Update::parse(r.layout(), &text).unwrap();
    r.apply(update).unwrap();
    assert_eq!(
        column(&r, TableId::Port, "p1", "tag"),
        json!(6),
        "the last one sent"
    );
    assert_eq!(
        column(&r, TableId::Port, "p1", "trunks"),
        json!(["set", []])
    );
    assert_eq!(
        column(&r, TableId::Port, "p1", "external_ids"),
        json!(["map", []])
    );
}

#[test]
fn parents_resolve_when_parent_and_child_arrive_together() {
    let mut r = replica();
    let changes = apply(
        &mut r,
        json!({
            "Interface": {I1: {"insert": {"name": "i1"}}},
            "Port": {P1: {"insert": {"name": "p1", "interfaces": uuid(I1)}}},
            "Bridge": {BR: {"insert": {"name": "br0", "ports": uuid(P1)}}}
        }),
    )
    .unwrap();
    assert_eq!(
        summary(&changes),
        [
            "BridgeAdded br0 bridge=br0 port=",
            "PortAdded p1 bridge=br0 port=",
            "InterfaceAdded i1 bridge=br0 port=p1",
        ]
    );
}

#[test]
fn removal_names_come_from_the_state_before_the_update() {
    let mut r = populated();
    let changes = apply(
        &mut r,
        json!({
            "Bridge": {BR: {"delete": null}},
            "Port": {P1: {"delete": null}},
            "Interface": {I1: {"delete": null}}
        }),
    )
    .unwrap();
    assert_eq!(
        summary(&changes),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "PortRemoved p1 bridge=br0 port=",
            "BridgeRemoved br0 bridge=br0 port=",
        ]
    );
    assert!(r.is_empty());
    assert!(r.find(TableId::Port, "p1").is_none());
    assert_eq!(r.parent(TableId::Interface, Uuid::parse(I1).unwrap()), None);
}

#[test]
fn order_is_removed_added_changed_by_table() {
    let mut r = populated();
    let changes = apply(
        &mut r,
        json!({
            "Interface": {I1: {"delete": null}, I2: {"insert": {"name": "i2"}}},
            "Port": {P1: {"modify": {"interfaces": ["set", [uuid(I1), uuid(I2)]], "tag": 7}}},
            "Bridge": {BR2: {"insert": {"name": "br1"}}}
        }),
    )
    .unwrap();
    assert_eq!(
        summary(&changes),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "BridgeAdded br1 bridge=br1 port=",
            "InterfaceAdded i2 bridge=br0 port=p1",
            "PortChanged p1 bridge=br0 port=",
        ]
    );
}

#[test]
fn modify_reports_changed_columns_with_old_and_new() {
    let mut r = populated();
    let changes = apply(
        &mut r,
        json!({"Port": {P1: {"modify": {
            "tag": 10,
            "trunks": ["set", [1, 2]],
            "external_ids": ["map", [["a", "1"]]]
        }}}}),
    )
    .unwrap();
    let [change] = changes.changes.as_slice() else {
        panic!("{changes:?}")
    };
    let ChangeKind::Changed { old, new, columns } = &change.kind else {
        panic!("not a change")
    };
    let port = r.layout().table(TableId::Port);
    let names: Vec<_> = columns
        .iter()
        .map(|&i| port.columns[i].name.as_str())
        .collect();
    assert_eq!(names, ["external_ids", "tag", "trunks"]);
    let tag = port.column_index("tag").unwrap();
    assert!(old[tag].is_empty());
    assert_eq!(new[tag].to_json(), json!(10));
    assert_eq!(
        column(&r, TableId::Port, "p1", "trunks"),
        json!(["set", [1, 2]])
    );
}

#[test]
fn diff_rules_on_live_rows() {
    let mut r = populated();
    let modify =
        |r: &mut Replica, diff: Json| apply(r, json!({"Port": {P1: {"modify": diff}}})).unwrap();
    modify(&mut r, json!({"trunks": ["set", [2, 3]]}));
    modify(&mut r, json!({"trunks": ["set", [1, 3]]}));
    assert_eq!(
        column(&r, TableId::Port, "p1", "trunks"),
        json!(["set", [1, 2]])
    );
    modify(
        &mut r,
        json!({"external_ids": ["map", [["x", "1"], ["y", "2"]]]}),
    );
    modify(
        &mut r,
        json!({"external_ids": ["map", [["x", "5"], ["y", "2"]]]}),
    );
    assert_eq!(
        column(&r, TableId::Port, "p1", "external_ids"),
        json!(["map", [["x", "5"]]])
    );
    modify(&mut r, json!({"tag": 20}));
    modify(&mut r, json!({"tag": ["set", []]}));
    assert_eq!(column(&r, TableId::Port, "p1", "tag"), json!(["set", []]));
}

#[test]
fn a_diff_that_changes_nothing_emits_nothing() {
    let mut r = populated();
    // Toggling the same element twice within one diff is impossible, but an update whose
    // only column is unchanged after application (a map key re-set by two transactions
    // the server coalesced) must stay silent.
    apply(&mut r, json!({"Port": {P1: {"modify": {"tag": 5}}}})).unwrap();
    let changes = apply(&mut r, json!({"Port": {P1: {"modify": {"tag": 5}}}})).unwrap();
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn inconsistencies_are_errors_and_change_nothing() {
    let mut r = populated();
    let before = format!("{:?}", r.tables);
    let cases = [
        json!({"Port": {P1: {"insert": {"name": "p1", "interfaces": uuid(I1)}}}}),
        json!({"Port": {P2: {"modify": {"tag": 1}}}}),
        json!({"Port": {P2: {"delete": null}}}),
        // Emptying a min=1 set.
        json!({"Port": {P1: {"modify": {"interfaces": uuid(I1)}}}}),
        // An optional with two values.
        json!({"Port": {P1: {"modify": {"tag": ["set", [1, 2]]}}}}),
        // A valid change together with an invalid one: neither is applied.
        json!({"Bridge": {BR: {"modify": {"datapath_type": "netdev"}}},
               "Port": {P2: {"delete": null}}}),
        // An inserted row violating its bounds.
        json!({"Port": {P2: {"insert": {"name": "p2", "interfaces": ["set", []]}}}}),
    ];
    for case in cases {
        let err = apply(&mut r, case.clone()).expect_err(&case.to_string());
        assert!(err.0.contains("row"), "{err}");
        assert_eq!(
            format!("{:?}", r.tables),
            before,
            "replica changed by {case}"
        );
    }
}

#[test]
fn a_row_twice_in_one_update_is_an_inconsistency() {
    let mut r = populated();
    let before = format!("{:?} {:?}", r.tables, r.by_name);
    // serde_json hands a repeated member of an object to the parser as it is, so a message
    // can name a row twice.
    for op in [json!({"delete": null}), json!({"modify": {"tag": 1}})] {
        let mut update =
            crate::replica::update::parse_json(r.layout(), json!({"Port": {P1: op}})).unwrap();
        update.rows.push(update.rows[0].clone());
        let err = r.apply(update).unwrap_err();
        assert!(err.0.contains("second operation on Port"), "{err}");
        assert_eq!(format!("{:?} {:?}", r.tables, r.by_name), before);
    }
}

#[test]
fn removals_after_a_resync_carry_the_names_before_it() {
    let mut r = populated();
    // While disconnected br0 became br9 (another object) and lost p1 with i1.
    let snapshot = crate::replica::update::parse_json(
        r.layout(),
        json!({"Bridge": {BR: {"initial": {"name": "br9"}}}}),
    )
    .unwrap();
    assert_eq!(
        summary(&r.replace(snapshot).unwrap()),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "PortRemoved p1 bridge=br0 port=",
            "BridgeRemoved br0 bridge=br0 port=",
            "BridgeAdded br9 bridge=br9 port=",
        ]
    );
}

#[test]
fn names_stay_with_their_rows_and_belong_to_one_row() {
    let mut r = populated();
    let before = format!("{:?} {:?}", r.tables, r.by_name);
    let cases = [
        // A rename.
        (
            json!({"Port": {P1: {"modify": {"name": "p9"}}}}),
            "rename of Port",
        ),
        // A second row with a name in use.
        (
            json!({"Port": {P2: {"insert": {"name": "p1", "interfaces": uuid(I2)}}},
                   "Interface": {I2: {"insert": {"name": "i2"}}}}),
            "a name another row has",
        ),
        // Two new rows with one name.
        (
            json!({"Interface": {I2: {"insert": {"name": "i9"}},
                                 "20000000-0000-0000-0000-000000000009": {"insert": {"name": "i9"}}}}),
            "a name another row has",
        ),
    ];
    for (case, why) in cases {
        let err = apply(&mut r, case.clone()).expect_err(&case.to_string());
        assert!(err.0.contains(why), "{case}: {err}");
        assert_eq!(format!("{:?} {:?}", r.tables, r.by_name), before, "{case}");
    }
    // A duplicate name in a snapshot is refused as well.
    let snapshot = crate::replica::update::parse_json(
        r.layout(),
        json!({"Bridge": {BR: {"initial": {"name": "br0"}}, BR2: {"initial": {"name": "br0"}}}}),
    )
    .unwrap();
    assert!(r.replace(snapshot).is_err());

    // Re-creating a name in one update (`del-port p1 -- add-port br0 p1`) is fine, and the
    // name then leads to the new row.
    let changes = apply(
        &mut r,
        json!({
            "Bridge": {BR: {"modify": {"ports": ["set", [uuid(P1), uuid(P2)]]}}},
            "Port": {P1: {"delete": null}, P2: {"insert": {"name": "p1", "interfaces": uuid(I2)}}},
            "Interface": {I1: {"delete": null}, I2: {"insert": {"name": "i1"}}}
        }),
    )
    .unwrap();
    assert_eq!(
        summary(&changes),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "PortRemoved p1 bridge=br0 port=",
            "PortAdded p1 bridge=br0 port=",
            "InterfaceAdded i1 bridge=br0 port=p1",
            "BridgeChanged br0 bridge=br0 port=",
        ]
    );
    assert_eq!(
        r.find(TableId::Port, "p1").unwrap().0,
        Uuid::parse(P2).unwrap()
    );
}

#[test]
fn port_moving_between_bridges_keeps_the_new_parent() {
    let mut r = populated();
    apply(
        &mut r,
        json!({"Bridge": {BR2: {"insert": {"name": "br1"}}}}),
    )
    .unwrap();
    // br1 gains p1 and br0 loses it in one update, br1 listed first (uuid order is arbitrary).
    let changes = apply(
        &mut r,
        json!({"Bridge": {
            BR2: {"modify": {"ports": uuid(P1)}},
            BR: {"modify": {"ports": uuid(P1)}}
        }}),
    )
    .unwrap();
    assert_eq!(changes.changes.len(), 2);
    assert_eq!(
        r.parent(TableId::Port, Uuid::parse(P1).unwrap()),
        Uuid::parse(BR2)
    );
}

#[test]
fn replace_emits_only_real_differences() {
    let mut r = populated();
    apply(
        &mut r,
        json!({
            "Bridge": {BR: {"modify": {"ports": uuid(P2)}}},
            "Port": {P2: {"insert": {"name": "p2", "interfaces": uuid(I2), "tag": 3}}},
            "Interface": {I2: {"insert": {"name": "i2"}}}
        }),
    )
    .unwrap();
    // While disconnected: p1 deleted, p2's tag changed, p3 added; the bridge is the same
    // apart from its port list.
    let p3 = "10000000-0000-0000-0000-000000000003";
    let i3 = "20000000-0000-0000-0000-000000000003";
    let snapshot = crate::replica::update::parse_json(
        r.layout(),
        json!({
            "Bridge": {BR: {"initial": {"name": "br0", "ports": ["set", [uuid(P2), uuid(p3)]]}}},
            "Port": {
                P2: {"initial": {"name": "p2", "interfaces": uuid(I2), "tag": 4}},
                p3: {"initial": {"name": "p3", "interfaces": uuid(i3)}}
            },
            "Interface": {
                I2: {"initial": {"name": "i2"}},
                i3: {"initial": {"name": "i3"}}
            }
        }),
    )
    .unwrap();
    let changes = r.replace(snapshot).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "PortRemoved p1 bridge=br0 port=",
            "PortAdded p3 bridge=br0 port=",
            "InterfaceAdded i3 bridge=br0 port=p3",
            "BridgeChanged br0 bridge=br0 port=",
            "PortChanged p2 bridge=br0 port=",
        ]
    );
    assert_eq!(column(&r, TableId::Port, "p2", "tag"), json!(4));
    assert_eq!(
        column(&r, TableId::Bridge, "br0", "ports")
            .as_array()
            .unwrap()[1]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn replace_with_identical_snapshot_is_silent() {
    let mut r = populated();
    let snapshot = crate::replica::update::parse_json(
        r.layout(),
        json!({
            "Bridge": {BR: {"initial": {"name": "br0", "ports": uuid(P1)}}},
            "Port": {P1: {"initial": {"name": "p1", "interfaces": uuid(I1)}}},
            "Interface": {I1: {"initial": {"name": "i1"}}}
        }),
    )
    .unwrap();
    assert!(r.replace(snapshot).unwrap().is_empty());
}

#[test]
fn replace_rejects_non_initial_rows() {
    let mut r = populated();
    let snapshot =
        crate::replica::update::parse_json(r.layout(), json!({"Port": {P1: {"delete": null}}}))
            .unwrap();
    assert!(r.replace(snapshot).is_err());
    assert!(r.find(TableId::Port, "p1").is_some());
}

#[test]
fn root_row_changes_are_flagged_not_published() {
    let mut r = replica();
    let root = "00000000-0000-0000-0000-0000000000aa";
    let changes = apply(
        &mut r,
        json!({"Open_vSwitch": {root: {"insert": {
            "ovs_version": "3.1.0",
            "external_ids": ["map", [["system-id", "abc"]]]
        }}}}),
    )
    .unwrap();
    assert!(changes.root_changed && changes.changes.is_empty());
    assert_eq!(r.root_string("ovs_version", None), "3.1.0");
    assert_eq!(r.root_string("external_ids", Some("system-id")), "abc");
    assert_eq!(r.root_string("db_version", None), "");
}

#[test]
fn relayout_then_replace_reports_only_differences_in_shared_columns() {
    let mut r = populated();
    apply(
        &mut r,
        json!({"Port": {P1: {"modify": {"tag": 3, "vlan_mode": "access"}}}}),
    )
    .unwrap();
    // The new schema: Port loses vlan_mode, gains x_owner, and tag changes type (a set).
    let mut schema = test_schema();
    schema.version = "9.0.0".into();
    let port = &mut schema.tables.get_mut("Port").unwrap().columns;
    port.remove("vlan_mode");
    let owner =
        crate::ovsdb::schema::test_type(crate::ovsdb::schema::AtomType::String, None, 0, Some(1));
    port.insert("x_owner".into(), owner);
    let tags =
        crate::ovsdb::schema::test_type(crate::ovsdb::schema::AtomType::Integer, None, 0, Some(4));
    port.insert("tag".into(), tags);
    let layout = Arc::new(Layout::new(&schema, &ColumnSelection::default()).unwrap());
    // The server's snapshot under it: i1 renamed meanwhile, p1 with an owner and a tag set.
    let snapshot = crate::replica::update::parse_json(
        &layout,
        json!({
            "Bridge": {BR: {"initial": {"name": "br0", "ports": uuid(P1)}}},
            "Port": {P1: {"initial": {"name": "p1", "interfaces": uuid(I1), "tag": ["set", [3, 5]],
                                      "x_owner": "openqa"}}},
            "Interface": {I1: {"initial": {"name": "i9"}}}
        }),
    )
    .unwrap();
    let mut migrated = r.relayout(layout.clone(), &snapshot).unwrap();
    let changes = migrated.replace(snapshot).unwrap();
    // Only the interface's new name, which both schemas have: another name is another
    // object, so i1 goes and i9 comes; nothing for x_owner, vlan_mode or the retyped tag.
    assert_eq!(
        summary(&changes),
        [
            "InterfaceRemoved i1 bridge=br0 port=p1",
            "InterfaceAdded i9 bridge=br0 port=p1"
        ]
    );
    assert!(migrated.find(TableId::Interface, "i1").is_none());
    assert_eq!(
        migrated.find(TableId::Interface, "i9").unwrap().0,
        Uuid::parse(I1).unwrap()
    );
    assert_eq!(
        column(&migrated, TableId::Port, "p1", "x_owner"),
        json!("openqa")
    );
    assert_eq!(
        column(&migrated, TableId::Port, "p1", "tag"),
        json!(["set", [3, 5]])
    );
    assert!(
        migrated
            .find(TableId::Port, "p1")
            .is_some_and(|(_, row)| migrated.column(TableId::Port, row, "vlan_mode").is_none())
    );
    assert_eq!(migrated.layout().schema_version, "9.0.0");
}

#[test]
fn values_outside_the_schemas_ranges_are_inconsistencies() {
    // test_schema's Port.tag is 0..=4095, as in the vswitch schema.
    for tag in [4096, -5, 99999] {
        let mut r = populated();
        let err = apply(&mut r, json!({"Port": {P1: {"modify": {"tag": tag}}}})).unwrap_err();
        assert!(err.0.contains("range 0..4095"), "{tag}: {err}");
        assert_eq!(
            column(&r, TableId::Port, "p1", "tag"),
            json!(["set", []]),
            "nothing applied"
        );
    }
    let mut r = replica();
    let err = apply(
        &mut r,
        json!({"Bridge": {BR: {"insert": {"name": "br0"}}},
               "Port": {P1: {"insert": {"name": "p1", "interfaces": uuid(I1), "tag": 5000}}},
               "Interface": {I1: {"insert": {"name": "i1"}}}}),
    )
    .unwrap_err();
    assert!(err.0.contains("5000"), "{err}");
}

#[test]
fn enumerations_and_string_lengths_are_checked() {
    use crate::ovsdb::schema::AtomRange;
    let range = AtomRange {
        max_length: Some(3),
        allowed: Some(vec![json!("ab"), json!("abcd")]),
        ..AtomRange::default()
    };
    let mut ty =
        crate::ovsdb::schema::test_type(crate::ovsdb::schema::AtomType::String, None, 0, Some(1));
    ty.key_range = range;
    let value = |s: &str| {
        crate::ovsdb::datum::Datum::Set(
            [crate::ovsdb::datum::Atom::String(s.into())]
                .into_iter()
                .collect(),
        )
    };
    assert!(super::diff::check_bounds(&ty, &value("ab")).is_ok());
    assert!(
        super::diff::check_bounds(&ty, &value("abc"))
            .unwrap_err()
            .contains("enumeration")
    );
    assert!(
        super::diff::check_bounds(&ty, &value("abcd"))
            .unwrap_err()
            .contains("length")
    );
}
