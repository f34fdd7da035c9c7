//! OVSDB (RFC 7047) over `<rundir>/db.sock`, spoken natively with serde_json: just enough to
//! read the `Interface` table once (`transact` select) or follow it (`monitor` + `update`
//! notifications), answering the server's `echo` keepalives.
//!
//! JSON-RPC messages on the socket are concatenated JSON texts with no delimiter, so the
//! reader parses one value at a time from a growing buffer (an EOF parse error = read more).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Columns of `Interface` we read.
const COLUMNS: [&str; 5] = ["name", "ofport", "external_ids", "mac_in_use", "type"];

/// Why talking to OVSDB failed.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("ovsdb socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ovsdb sent invalid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ovsdb error: {0}")]
    Server(String),
    #[error("ovsdb closed the connection")]
    Closed,
}

/// One row of the `Interface` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// `None` until ovs-vswitchd assigned a port (or -1: it failed to).
    pub ofport: Option<u32>,
    pub external_ids: BTreeMap<String, String>,
    pub mac_in_use: Option<String>,
    pub kind: String,
}

impl Interface {
    /// Builds a row from OVSDB's JSON representation (missing columns read as empty).
    pub fn from_row(row: &Value) -> Self {
        let name = row
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ofport = row
            .get("ofport")
            .and_then(Value::as_i64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let mut external_ids = BTreeMap::new();
        // ["map", [["k", "v"], ...]]
        if let Some(pairs) = row
            .get("external_ids")
            .and_then(|m| m.get(1))
            .and_then(Value::as_array)
        {
            for pair in pairs {
                if let (Some(k), Some(v)) = (
                    pair.get(0).and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_str),
                ) {
                    external_ids.insert(k.to_string(), v.to_string());
                }
            }
        }
        // A string, or ["set", []] when unset.
        let mac_in_use = row
            .get("mac_in_use")
            .and_then(Value::as_str)
            .map(str::to_string);
        let kind = row
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Self {
            name,
            ofport,
            external_ids,
            mac_in_use,
            kind,
        }
    }
}

/// A JSON-RPC connection to ovsdb-server.
pub struct Ovsdb {
    io: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Ovsdb {
    pub async fn connect(path: &Path) -> Result<Self, OvsdbError> {
        Ok(Self {
            io: UnixStream::connect(path).await?,
            buf: Vec::new(),
            next_id: 1,
        })
    }

    async fn send(&mut self, v: &Value) -> Result<(), OvsdbError> {
        let bytes = serde_json::to_vec(v)?;
        self.io.write_all(&bytes).await?;
        Ok(())
    }

    /// Reads the next JSON-RPC message, answering `echo` requests on the way.
    async fn next(&mut self) -> Result<Value, OvsdbError> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    if v.get("method").and_then(Value::as_str) == Some("echo") {
                        let id = v.get("id").cloned().unwrap_or(Value::Null);
                        let params = v.get("params").cloned().unwrap_or(json!([]));
                        self.send(&json!({"result": params, "error": null, "id": id}))
                            .await?;
                        continue;
                    }
                    return Ok(v);
                }
                Some(Err(e)) if e.is_eof() => {}
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(OvsdbError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"method": method, "params": params, "id": id}))
            .await?;
        loop {
            let v = self.next().await?;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    return Err(OvsdbError::Server(err.to_string()));
                }
                return Ok(v.get("result").cloned().unwrap_or(Value::Null));
            }
        }
    }

    /// All interfaces, via `transact` + `select`.
    pub async fn list_interfaces(&mut self) -> Result<Vec<Interface>, OvsdbError> {
        let result = self
            .call(
                "transact",
                json!(["Open_vSwitch", {"op": "select", "table": "Interface", "where": [], "columns": COLUMNS}]),
            )
            .await?;
        let rows = result
            .get(0)
            .and_then(|r| {
                if let Some(e) = r.get("error") {
                    return Some(Err(OvsdbError::Server(e.to_string())));
                }
                r.get("rows")
                    .and_then(Value::as_array)
                    .map(|rows| Ok(rows.clone()))
            })
            .unwrap_or_else(|| Ok(Vec::new()))?;
        Ok(rows.iter().map(Interface::from_row).collect())
    }

    /// Starts monitoring `Interface`; returns a [`InterfaceMonitor`] holding the initial rows.
    pub async fn monitor_interfaces(mut self) -> Result<InterfaceMonitor, OvsdbError> {
        let initial = self
            .call(
                "monitor",
                json!(["Open_vSwitch", "tf-agent", {"Interface": {"columns": COLUMNS}}]),
            )
            .await?;
        let mut m = InterfaceMonitor {
            db: self,
            rows: HashMap::new(),
        };
        m.apply(&initial);
        Ok(m)
    }
}

/// A live view of the `Interface` table.
pub struct InterfaceMonitor {
    db: Ovsdb,
    rows: HashMap<String, Interface>,
}

impl InterfaceMonitor {
    /// The current rows.
    pub fn interfaces(&self) -> Vec<Interface> {
        let mut v: Vec<_> = self.rows.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Waits for the next `update` notification and applies it.
    pub async fn changed(&mut self) -> Result<(), OvsdbError> {
        loop {
            let v = self.db.next().await?;
            if v.get("method").and_then(Value::as_str) == Some("update") {
                if let Some(updates) = v.get("params").and_then(|p| p.get(1)) {
                    self.apply(updates);
                }
                return Ok(());
            }
        }
    }

    /// Applies `<table-updates>`: `{"Interface": {uuid: {"old": .., "new": ..}}}`. In RFC 7047
    /// (monitor v1) `new` holds every monitored column, so a row is simply replaced.
    fn apply(&mut self, updates: &Value) {
        let Some(table) = updates.get("Interface").and_then(Value::as_object) else {
            return;
        };
        for (uuid, change) in table {
            match change.get("new") {
                Some(new) => {
                    self.rows.insert(uuid.clone(), Interface::from_row(new));
                }
                None => {
                    self.rows.remove(uuid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    fn row(name: &str, ofport: i64) -> Value {
        json!({"name": name, "ofport": ofport, "external_ids": ["map", [["k8s_pod_name", name]]],
               "mac_in_use": "02:00:00:00:00:01", "type": ""})
    }

    /// A scripted ovsdb-server: monitor reply, an echo probe, messages split across writes,
    /// insert / modify / delete updates.
    #[tokio::test]
    async fn monitor_follows_updates_and_answers_echo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(req["method"], "monitor");
            assert_eq!(req["params"][0], "Open_vSwitch");
            let reply = json!({"id": req["id"], "error": null,
                               "result": {"Interface": {"u1": {"new": row("p0", 3)}}}});
            // Split the reply across two writes: the client must wait for the rest.
            let bytes = serde_json::to_vec(&reply).unwrap_or_default();
            let (a, b) = bytes.split_at(bytes.len() / 2);
            s.write_all(a).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b).await.unwrap();
            // The server's keepalive must be answered with its params and id.
            let echo = json!({"method": "echo", "params": ["x"], "id": "echo"});
            let update = json!({"method": "update", "id": null, "params": [null, {"Interface": {
                "u2": {"new": row("p1", 4)},
                "u1": {"old": {"ofport": 3}, "new": row("p0", 7)}}}]});
            let mut both = serde_json::to_vec(&echo).unwrap_or_default();
            both.extend(serde_json::to_vec(&update).unwrap_or_default());
            s.write_all(&both).await.unwrap();
            let n = s.read(&mut buf).await.unwrap();
            let pong: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(pong, json!({"result": ["x"], "error": null, "id": "echo"}));
            let delete = json!({"method": "update", "id": null, "params": [null, {"Interface": {
                "u1": {"old": row("p0", 7)}}}]});
            s.write_all(&serde_json::to_vec(&delete).unwrap_or_default())
                .await
                .unwrap();
        });

        let db = Ovsdb::connect(&path).await.unwrap();
        let mut mon = db.monitor_interfaces().await.unwrap();
        let ports = |m: &InterfaceMonitor| -> Vec<(String, Option<u32>)> {
            m.interfaces()
                .into_iter()
                .map(|i| (i.name, i.ofport))
                .collect()
        };
        assert_eq!(ports(&mon), vec![("p0".to_string(), Some(3))]);
        mon.changed().await.unwrap();
        assert_eq!(
            ports(&mon),
            vec![("p0".to_string(), Some(7)), ("p1".to_string(), Some(4))]
        );
        mon.changed().await.unwrap();
        assert_eq!(ports(&mon), vec![("p1".to_string(), Some(4))]);
        server.await.unwrap();
        assert!(matches!(mon.changed().await, Err(OvsdbError::Closed)));
    }

    #[test]
    fn row_parsing_handles_ovsdb_sets_and_maps() {
        let row = json!({
            "name": "p0",
            "ofport": 3,
            "external_ids": ["map", [["k8s_pod_name", "p0"], ["ip", "10.1.0.2"]]],
            "mac_in_use": "02:00:00:00:00:01",
            "type": ""
        });
        let i = Interface::from_row(&row);
        assert_eq!(i.ofport, Some(3));
        assert_eq!(
            i.external_ids.get("ip").map(String::as_str),
            Some("10.1.0.2")
        );
        let unset = json!({"name": "x", "ofport": ["set", []], "external_ids": ["map", []], "mac_in_use": ["set", []]});
        let i = Interface::from_row(&unset);
        assert_eq!(i.ofport, None);
        assert_eq!(i.mac_in_use, None);
        assert_eq!(Interface::from_row(&json!({"ofport": -1})).ofport, None);
    }
}
