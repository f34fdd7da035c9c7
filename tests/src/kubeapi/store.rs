//! The object store behind the API: every object keyed by (resource type, namespace, name), one
//! resource-version counter, and a history of events so a watch can resume from any version.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{
    crd,
    resources::{self, RESOURCES, ResourceType},
};

/// Why a request against the store failed; maps onto a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; please \
         apply your changes to the latest version and try again"
    )]
    Conflict { kind: String, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("too old resource version: {requested} (oldest kept {oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// The object breaks its CRD's schema (Kubernetes' wording: `Kind.group "name" is invalid`).
    #[error("{kind}.{group} {name:?} is invalid: {}", causes_text(causes))]
    FieldsInvalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<crd::Cause>,
    },
}

fn causes_text(causes: &[crd::Cause]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl StoreError {
    /// `details` of the Kubernetes `Status`, naming each invalid field.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            StoreError::FieldsInvalid {
                group,
                kind,
                name,
                causes,
            } => Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason, "message": c.message, "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            _ => None,
        }
    }

    /// HTTP status code and Kubernetes `reason`.
    pub fn code_reason(&self) -> (u16, &'static str) {
        match self {
            StoreError::NotFound { .. } => (404, "NotFound"),
            StoreError::AlreadyExists { .. } => (409, "AlreadyExists"),
            StoreError::Conflict { .. } => (409, "Conflict"),
            StoreError::Invalid(_) | StoreError::FieldsInvalid { .. } => (422, "Invalid"),
            StoreError::Expired { .. } => (410, "Expired"),
        }
    }
}

/// Key of one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub resource: usize,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

/// Watch event type, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, at the resource version it produced.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    pub object: Value,
}

/// Objects, the resource-version counter and the change history.
///
/// The history is kept whole (a lab cluster changes rarely), so a watch from any version the
/// store handed out resumes without `410 Gone`.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    tx: broadcast::Sender<Event>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Store {
    /// An empty store at resource version 0.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            rv: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            tx,
        }
    }

    /// A store holding `objects` (each with `apiVersion`, `kind`, `metadata.name`).
    pub fn with_objects(objects: Vec<Value>) -> Result<Self, StoreError> {
        let mut s = Self::new();
        for o in objects {
            let api_version = o
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
            let (index, rt) = resources::by_kind(api_version, kind).ok_or_else(|| {
                StoreError::Invalid(format!("{api_version} {kind} is not served"))
            })?;
            let ns = if rt.namespaced {
                meta_str(&o, "namespace").unwrap_or("default").to_string()
            } else {
                String::new()
            };
            s.create(index, &ns, o)?;
        }
        Ok(s)
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Objects of one type (in one namespace when `namespace` is given), sorted by key.
    pub fn list(&self, resource: usize, namespace: Option<&str>) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Result<Value, StoreError> {
        self.objects.get(key).cloned().ok_or_else(|| not_found(key))
    }

    /// History after `rv` plus a receiver for what follows, taken atomically so nothing is
    /// missed or seen twice.
    pub fn watch_from(
        &self,
        rv: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), StoreError> {
        if rv > self.rv {
            // A version from the future (e.g. an API server restart): start from now.
            return Ok((Vec::new(), self.tx.subscribe()));
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok((self.history[start..].to_vec(), self.tx.subscribe()))
    }

    fn record(&mut self, key: Key, kind: EventType, object: Value) {
        let ev = Event {
            rv: self.rv,
            key,
            kind,
            object,
        };
        self.history.push(ev.clone());
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    fn rt(index: usize) -> Result<&'static ResourceType, StoreError> {
        RESOURCES
            .get(index)
            .ok_or_else(|| StoreError::Invalid(format!("resource type {index} unknown")))
    }

    /// Creates an object; fills `metadata` (uid, resourceVersion, creationTimestamp, generation,
    /// name from generateName) and `apiVersion`/`kind`.
    pub fn create(
        &mut self,
        resource: usize,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, StoreError> {
        let rt = Self::rt(resource)?;
        if !obj.is_object() {
            return Err(StoreError::Invalid("body must be a JSON object".into()));
        }
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = meta_str(&obj, "generateName").unwrap_or_default();
            if prefix.is_empty() {
                return Err(StoreError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            }
            const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            let suffix: String = (0..5)
                .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
                .collect();
            name = format!("{prefix}{suffix}");
        }
        let key = Key {
            resource,
            namespace: if rt.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.clone(),
        };
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                kind: rt.kind.into(),
                name,
            });
        }
        crate::topology::set(&mut obj, "/apiVersion", json!(rt.api_version()));
        crate::topology::set(&mut obj, "/kind", json!(rt.kind));
        crate::topology::set(&mut obj, "/metadata/name", json!(name));
        if rt.namespaced {
            crate::topology::set(&mut obj, "/metadata/namespace", json!(key.namespace));
        }
        crate::topology::set(&mut obj, "/metadata/uid", json!(new_uid()));
        crate::topology::set(&mut obj, "/metadata/generation", json!(1));
        crate::topology::set(
            &mut obj,
            "/metadata/creationTimestamp",
            json!(now_rfc3339()),
        );
        admit(rt, &name, &mut obj)?;
        self.rv += 1;
        crate::topology::set(
            &mut obj,
            "/metadata/resourceVersion",
            json!(self.rv.to_string()),
        );
        self.objects.insert(key.clone(), obj.clone());
        self.record(key, EventType::Added, obj.clone());
        Ok(obj)
    }

    /// Replaces an object (`status == false`: everything but `status`; `status == true`: only
    /// `status`), as PUT on the object or its `/status` subresource. A `metadata.resourceVersion`
    /// in the body must match the stored one.
    pub fn replace(&mut self, key: &Key, body: Value, status: bool) -> Result<Value, StoreError> {
        let rt = Self::rt(key.resource)?;
        let current = self.get(key)?;
        if let Some(rv) = meta_str(&body, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&current, "resourceVersion")
        {
            return Err(StoreError::Conflict {
                kind: rt.kind.into(),
                name: key.name.clone(),
            });
        }
        let mut next = if status {
            let mut n = current.clone();
            match body.get("status") {
                Some(s) => crate::topology::set(&mut n, "/status", s.clone()),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = body;
            match current.get("status") {
                Some(s) => crate::topology::set(&mut n, "/status", s.clone()),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        };
        self.commit_update(key, &current, &mut next)?;
        Ok(next)
    }

    /// Applies a JSON merge patch to an object (or only to its status).
    pub fn patch(&mut self, key: &Key, patch: &Value, status: bool) -> Result<Value, StoreError> {
        let current = self.get(key)?;
        let mut next = current.clone();
        if status {
            if let Some(s) = patch.get("status") {
                let mut st = next.get("status").cloned().unwrap_or(json!({}));
                merge_patch(&mut st, s);
                crate::topology::set(&mut next, "/status", st);
            }
        } else {
            let mut p = patch.clone();
            if let Some(m) = p.as_object_mut() {
                m.remove("status");
            }
            merge_patch(&mut next, &p);
        }
        self.commit_update(key, &current, &mut next)?;
        Ok(next)
    }

    fn commit_update(
        &mut self,
        key: &Key,
        current: &Value,
        next: &mut Value,
    ) -> Result<(), StoreError> {
        let rt = Self::rt(key.resource)?;
        if let Some(n) = meta_str(next, "name")
            && n != key.name
        {
            return Err(StoreError::Invalid(format!(
                "metadata.name: {n:?} does not match the path's {:?}",
                key.name
            )));
        }
        // Server-owned metadata is kept from the stored object.
        for field in ["uid", "creationTimestamp", "namespace", "name"] {
            if let Some(v) = current.get("metadata").and_then(|m| m.get(field)) {
                crate::topology::set(next, &format!("/metadata/{field}"), v.clone());
            }
        }
        crate::topology::set(next, "/apiVersion", json!(rt.api_version()));
        crate::topology::set(next, "/kind", json!(rt.kind));
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = current.get("spec") != next.get("spec");
        crate::topology::set(
            next,
            "/metadata/generation",
            json!(if spec_changed {
                generation + 1
            } else {
                generation
            }),
        );
        admit(rt, &key.name, next)?;
        self.rv += 1;
        crate::topology::set(
            next,
            "/metadata/resourceVersion",
            json!(self.rv.to_string()),
        );
        self.objects.insert(key.clone(), next.clone());
        self.record(key.clone(), EventType::Modified, next.clone());
        Ok(())
    }

    /// Deletes an object, returning it as it was last stored (with the deletion's version).
    pub fn delete(&mut self, key: &Key) -> Result<Value, StoreError> {
        let mut obj = self.objects.remove(key).ok_or_else(|| not_found(key))?;
        self.rv += 1;
        crate::topology::set(
            &mut obj,
            "/metadata/resourceVersion",
            json!(self.rv.to_string()),
        );
        self.record(key.clone(), EventType::Deleted, obj.clone());
        Ok(obj)
    }
}

/// A custom resource's CRD schema: unknown fields pruned, then every violation refused.
fn admit(rt: &ResourceType, name: &str, obj: &mut Value) -> Result<(), StoreError> {
    let Some(c) = crd::for_resource(rt) else {
        return Ok(());
    };
    crd::admit(c, obj).map_err(|causes| StoreError::FieldsInvalid {
        group: rt.group.to_string(),
        kind: rt.kind.to_string(),
        name: name.to_string(),
        causes,
    })
}

fn not_found(key: &Key) -> StoreError {
    StoreError::NotFound {
        kind: RESOURCES
            .get(key.resource)
            .map(|r| r.plural)
            .unwrap_or("object")
            .to_string(),
        name: key.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(name: &str) -> Value {
        json!({"apiVersion": "crd.traceflow.io/v1beta1", "kind": "Traceflow",
               "metadata": {"name": name}, "spec": {"source": {"pod": "p0"}}})
    }

    fn tf_index() -> usize {
        resources::index_of("crd.traceflow.io/v1beta1", "Traceflow").unwrap_or(usize::MAX)
    }

    #[test]
    fn create_update_status_delete_bump_versions_and_record_events() -> Result<(), StoreError> {
        let mut s = Store::new();
        let r = tf_index();
        let created = s.create(r, "", tf("t1"))?;
        assert_eq!(meta_str(&created, "resourceVersion"), Some("1"));
        let key = Key {
            resource: r,
            namespace: String::new(),
            name: "t1".into(),
        };
        let mut body = created.clone();
        crate::topology::set(&mut body, "/status/phase", json!("Running"));
        let st = s.replace(&key, body.clone(), true)?;
        assert_eq!(st.pointer("/status/phase"), Some(&json!("Running")));
        assert_eq!(st.pointer("/metadata/generation"), Some(&json!(1)));
        // A stale resourceVersion conflicts.
        assert!(matches!(
            s.replace(&key, body, false),
            Err(StoreError::Conflict { .. })
        ));
        let p = s.patch(&key, &json!({"status": {"phase": "Succeeded"}}), true)?;
        assert_eq!(p.pointer("/status/phase"), Some(&json!("Succeeded")));
        assert_eq!(p.pointer("/spec/source/pod"), Some(&json!("p0")));
        s.delete(&key)?;
        let (events, _rx) = s.watch_from(1)?;
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventType::Modified, EventType::Modified, EventType::Deleted]
        );
        assert!(matches!(s.get(&key), Err(StoreError::NotFound { .. })));
        Ok(())
    }

    #[test]
    fn generate_name_and_duplicates() -> Result<(), StoreError> {
        let mut s = Store::new();
        let r = tf_index();
        let o = s.create(
            r,
            "",
            json!({"metadata": {"generateName": "p0-to-p1-"}, "spec": {}}),
        )?;
        assert!(meta_str(&o, "name").is_some_and(|n| n.starts_with("p0-to-p1-") && n.len() == 14));
        s.create(r, "", tf("x"))?;
        assert!(matches!(
            s.create(r, "", tf("x")),
            Err(StoreError::AlreadyExists { .. })
        ));
        Ok(())
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
