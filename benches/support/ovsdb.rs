//! A minimal raw OVSDB (RFC 7047) client over the unix socket: the load generator and the
//! baseline subscriber. Deliberately not `ovs-vsctl`/`ovsdb-client`: forking a process per
//! transaction would measure the fork, and those tools cannot pipeline.

use super::events::EventSink;
use super::now_usec;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const DB: &str = "Open_vSwitch";
/// The tables the relay mirrors; the baseline monitors exactly these.
pub const TABLES: [&str; 3] = ["Bridge", "Port", "Interface"];

/// Splits the byte stream into JSON-RPC messages (OVSDB sends bare concatenated JSON
/// values, no delimiter), each stamped when it has been fully read and decoded: that is
/// when a client can act on it.
pub fn messages(stream: UnixStream) -> impl Iterator<Item = (u64, Json)> {
    serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, stream))
        .into_iter::<Json>()
        .map_while(Result::ok)
        .map(|message| (now_usec(), message))
}

fn request(id: Json, method: &str, params: Json) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))
        .expect("a JSON value serialises")
}

/// Answers the server's `echo` keepalive; returns whether `message` was one. Without an
/// answer the server would drop a connection that is busy only receiving.
fn answer_echo(message: &Json, out: &mut impl Write) -> bool {
    if message["method"] != "echo" || message["id"].is_null() {
        return false;
    }
    let reply = json!({"id": message["id"], "result": message["params"], "error": null});
    let _ = out.write_all(&serde_json::to_vec(&reply).expect("serialises"));
    true
}

/// The first error among a `transact` result's operations, if any.
pub fn transact_error(result: &Json) -> Option<String> {
    result
        .as_array()?
        .iter()
        .find(|op| op.get("error").is_some_and(|e| !e.is_null()))
        .map(ToString::to_string)
}

pub struct Reply {
    pub id: u64,
    /// When the reply was read: for a `transact`, the commit as the writer sees it.
    pub at_usec: u64,
    pub result: Result<Json, String>,
}

/// A pipelining client: requests are written from the caller's thread, replies are read
/// by a thread of their own, so any number of requests can be in flight.
pub struct Client {
    out: Arc<Mutex<UnixStream>>,
    replies: Receiver<Reply>,
    next_id: u64,
}

impl Client {
    pub fn connect(sock: &Path) -> std::io::Result<Client> {
        let stream = UnixStream::connect(sock)?;
        let reader = stream.try_clone()?;
        let out = Arc::new(Mutex::new(stream));
        let echo_out = out.clone();
        let (tx, replies) = mpsc::channel();
        thread::spawn(move || {
            for (at_usec, message) in messages(reader) {
                if !message["method"].is_null() {
                    let mut out = echo_out.lock().unwrap_or_else(|e| e.into_inner());
                    answer_echo(&message, &mut *out);
                    continue;
                }
                let result = match &message["error"] {
                    Json::Null => Ok(message["result"].clone()),
                    error => Err(error.to_string()),
                };
                let id = message["id"].as_u64().unwrap_or(u64::MAX);
                if tx
                    .send(Reply {
                        id,
                        at_usec,
                        result,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Client {
            out,
            replies,
            next_id: 0,
        })
    }

    pub fn send(&mut self, method: &str, params: Json) -> u64 {
        self.next_id += 1;
        let bytes = request(json!(self.next_id), method, params);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&bytes)
            .unwrap_or_else(|e| panic!("writing to ovsdb-server: {e}"));
        self.next_id
    }

    pub fn transact(&mut self, ops: Vec<Json>) -> u64 {
        let mut params = vec![json!(DB)];
        params.extend(ops);
        self.send("transact", Json::Array(params))
    }

    pub fn recv(&self, timeout: Duration) -> Option<Reply> {
        match self.replies.recv_timeout(timeout) {
            Ok(reply) => Some(reply),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("ovsdb-server closed the connection"),
        }
    }

    /// Waits for `pending` replies (any order); panics on a failed
    /// transaction or after `timeout`, since the workload would no longer be the one
    /// measured. Returns the last reply.
    pub fn wait_all(&self, mut pending: usize, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .recv(left)
                .unwrap_or_else(|| panic!("{pending} OVSDB replies missing after {timeout:?}"));
            check(&reply);
            pending -= 1;
            last = Some(reply);
        }
        last.expect("waited for at least one reply")
    }

    /// One transaction, waited for.
    pub fn transact_wait(&mut self, ops: Vec<Json>, timeout: Duration) -> Reply {
        self.transact(ops);
        self.wait_all(1, timeout)
    }
}

/// Panics on an RPC error or a failed operation inside a transaction.
pub fn check(reply: &Reply) {
    match &reply.result {
        Err(error) => panic!("OVSDB request {} failed: {error}", reply.id),
        Ok(result) => {
            if let Some(error) = transact_error(result) {
                panic!("OVSDB transaction {} failed: {error}", reply.id);
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Ends the reader thread, which is blocked in read().
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.shutdown(Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------
// Transactions of the workload
// ---------------------------------------------------------------------------------------

fn where_name(name: &str) -> Json {
    json!([["name", "==", name]])
}

/// The root row and one empty bridge: what `ovs-vsctl init` + `add-br` leave behind.
pub fn init_ops(bridge: &str) -> Vec<Json> {
    vec![
        json!({"op": "insert", "table": "Open_vSwitch",
               "row": {"bridges": ["named-uuid", "br"]}}),
        json!({"op": "insert", "table": "Bridge", "uuid-name": "br",
               "row": {"name": bridge}}),
    ]
}

pub struct NewPort {
    pub name: String,
    /// Lets a later transaction in the same pipeline delete the port before the reply
    /// carrying its server-chosen uuid has come back.
    pub uuid: Option<String>,
}

impl NewPort {
    pub fn named(name: String) -> NewPort {
        NewPort { name, uuid: None }
    }
}

/// Inserts each port with one interface of the same name and attaches them to `bridge`:
/// two rows per port plus one Bridge modification, as `ovs-vsctl add-port` does.
pub fn add_ports_ops(bridge: &str, ports: &[NewPort]) -> Vec<Json> {
    let mut ops = Vec::with_capacity(2 * ports.len() + 1);
    let mut refs = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        ops.push(
            json!({"op": "insert", "table": "Interface", "uuid-name": format!("i{i}"),
                        "row": {"name": port.name}}),
        );
        let row = json!({"name": port.name, "interfaces": ["named-uuid", format!("i{i}")]});
        // ovsdb-server resolves a forward named-uuid reference before it sees an explicit
        // uuid, so a port with a fixed uuid is referenced by that uuid instead.
        match &port.uuid {
            Some(uuid) => {
                ops.push(json!({"op": "insert", "table": "Port", "uuid": uuid, "row": row}));
                refs.push(json!(["uuid", uuid]));
            }
            None => {
                ops.push(json!({"op": "insert", "table": "Port",
                                "uuid-name": format!("p{i}"), "row": row}));
                refs.push(json!(["named-uuid", format!("p{i}")]));
            }
        }
    }
    ops.push(
        json!({"op": "mutate", "table": "Bridge", "where": where_name(bridge),
                    "mutations": [["ports", "insert", ["set", refs]]]}),
    );
    ops
}

/// Detaches a port by uuid; ovsdb-server garbage-collects the Port and its Interface.
pub fn delete_port_ops(bridge: &str, uuid: &str) -> Vec<Json> {
    vec![
        json!({"op": "mutate", "table": "Bridge", "where": where_name(bridge),
                "mutations": [["ports", "delete", ["set", [["uuid", uuid]]]]]}),
    ]
}

pub fn set_tag_op(port: &str, tag: u16) -> Json {
    json!({"op": "update", "table": "Port", "where": where_name(port), "row": {"tag": tag}})
}

/// By uuid: ovsdb-server indexes `_uuid`, a `name` condition scans the whole table,
/// which at 10,000 ports makes the server, not the subscribers, the bottleneck.
pub fn set_tag_by_uuid_op(uuid: &str, tag: u16) -> Json {
    json!({"op": "update", "table": "Port", "where": [["_uuid", "==", ["uuid", uuid]]],
           "row": {"tag": tag}})
}

pub fn set_external_id_op(table: &str, name: &str, value: &str) -> Json {
    json!({"op": "update", "table": table, "where": where_name(name),
           "row": {"external_ids": ["map", [["bench", value]]]}})
}

// ---------------------------------------------------------------------------------------
// The baseline subscriber (`relay --monitor SOCK`)
// ---------------------------------------------------------------------------------------

/// The direct subscriber: `monitor_cond` on the relay's three tables with every column
/// (what `ovsdb-client monitor-cond` does), one event line per row update. It keeps a
/// uuid → name map only because `modify` and `delete` updates do not repeat the name.
pub fn monitor_main(sock: &Path) -> Result<(), String> {
    let mut out = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    let stream = out.try_clone().map_err(|e| e.to_string())?;
    let requests: serde_json::Map<String, Json> = TABLES
        .iter()
        .map(|t| (t.to_string(), json!([{}])))
        .collect();
    out.write_all(&request(
        json!("monitor"),
        "monitor_cond",
        json!([DB, "bench-baseline", requests]),
    ))
    .map_err(|e| e.to_string())?;

    let mut names: HashMap<String, String> = HashMap::new();
    let mut sink = EventSink::default();
    for (at_usec, message) in messages(stream) {
        if answer_echo(&message, &mut out) {
            continue;
        }
        if message["id"] == "monitor" {
            if !message["error"].is_null() {
                return Err(format!("monitor_cond failed: {}", message["error"]));
            }
            let rows = apply_updates(&message["result"], &mut names, |_, _, _| {});
            sink.ready(at_usec, rows);
        } else if message["method"] == "update2" {
            apply_updates(&message["params"][1], &mut names, |table, op, name| {
                sink.event(at_usec, 0, 0, &format!("{table}{op}"), name)
            });
            sink.flush();
        }
    }
    Ok(())
}

/// Walks a `table-updates2` object, keeping `names` current, and calls `each(table, op,
/// name)` with the relay's wording for the operation. Returns the number of rows.
fn apply_updates(
    updates: &Json,
    names: &mut HashMap<String, String>,
    mut each: impl FnMut(&str, &str, &str),
) -> usize {
    let mut rows = 0;
    let Some(tables) = updates.as_object() else {
        return 0;
    };
    for (table, table_rows) in tables {
        for (uuid, update) in table_rows.as_object().into_iter().flatten() {
            rows += 1;
            let Some((op, row)) = update.as_object().and_then(|u| u.iter().next()) else {
                continue;
            };
            if let Some(name) = row.get("name").and_then(Json::as_str) {
                names.insert(uuid.clone(), name.to_owned());
            }
            let removed;
            let name = if op == "delete" {
                removed = names.remove(uuid).unwrap_or_default();
                removed.as_str()
            } else {
                names.get(uuid).map_or("", String::as_str)
            };
            match op.as_str() {
                "insert" => each(table, "Added", name),
                "modify" => each(table, "Changed", name),
                "delete" => each(table, "Removed", name),
                _ => {} // "initial": the snapshot, which the relay does not signal either.
            }
        }
    }
    rows
}
