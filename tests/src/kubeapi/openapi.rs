//! What `kubectl` reads beyond discovery: the OpenAPI v3 documents (it looks for the
//! `fieldValidation` parameter of each kind's PATCH before `create`, and without them refuses
//! with "failed to download openapi") and server-side `Table`s for `kubectl get` (a custom
//! resource's printer columns are computed by the server, not by kubectl). `/openapi/v2` is not
//! served: kubectl 1.33 asks for it only when v3 is missing.
//!
//! ```text
//!  GET /openapi/v3                 ─▶ {paths: {"apis/<g>/<v>": {serverRelativeURL}}}
//!  GET /openapi/v3/apis/<g>/<v>    ─▶ paths (POST/PUT/PATCH with fieldValidation) + schemas
//!  GET …/traceflows  Accept: as=Table ─▶ Table {columnDefinitions, rows[cells]}
//! ```

use serde_json::{Map, Value, json};

use super::{
    crd,
    resources::{RESOURCES, ResourceType},
};

fn gv_path(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        format!("api/{}", rt.version)
    } else {
        format!("apis/{}/{}", rt.group, rt.version)
    }
}

/// `/openapi/v3`: one entry per served group-version.
pub fn root() -> Value {
    let mut paths = Map::new();
    for rt in RESOURCES {
        let p = gv_path(rt);
        let url = format!("/openapi/v3/{p}?hash=lab");
        paths.insert(p, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// Component name of a kind's schema, in Kubernetes' reversed-group style.
fn schema_name(rt: &ResourceType) -> String {
    let group: Vec<&str> = if rt.group.is_empty() {
        vec!["io", "k8s", "api", "core"]
    } else {
        rt.group.split('.').rev().collect()
    };
    format!("{}.{}.{}", group.join("."), rt.version, rt.kind)
}

/// The schema of a kind: the CRD's for ours, an open object for the rest (the lab does not
/// model built-in types; kubectl only needs the paths to exist).
fn kind_schema(rt: &ResourceType) -> Value {
    let gvk = json!([{ "group": rt.group, "version": rt.version, "kind": rt.kind }]);
    let mut schema = match crd::for_resource(rt) {
        Some(c) => c.schema.clone(),
        None => json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
    };
    if let Some(props) = schema
        .as_object_mut()
        .map(|o| o.entry("properties").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        props.insert("apiVersion".into(), json!({ "type": "string" }));
        props.insert("kind".into(), json!({ "type": "string" }));
        props.insert(
            "metadata".into(),
            json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        );
    }
    schema["x-kubernetes-group-version-kind"] = gvk;
    schema
}

fn operation(rt: &ResourceType, action: &str, with_body: bool) -> Value {
    let reference = json!({ "$ref": format!("#/components/schemas/{}", schema_name(rt)) });
    let mut op = json!({
        "operationId": format!("{action}{}", rt.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind":
            { "group": rt.group, "version": rt.version, "kind": rt.kind },
        "parameters": [
            { "name": "dryRun", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldManager", "in": "query", "schema": { "type": "string" } },
            { "name": "fieldValidation", "in": "query", "schema": { "type": "string" } },
        ],
        "responses": { "200": { "content": { "application/json": { "schema": reference } } } },
    });
    if with_body {
        op["requestBody"] = json!({ "content": { "application/json": { "schema": reference } } });
    }
    op
}

/// `/openapi/v3/<api|apis>/<group>/<version>`, or `None` if no such group-version is served.
pub fn group_version(path: &str) -> Option<Value> {
    let gv = path.strip_prefix("/openapi/v3/")?.trim_end_matches('/');
    let served: Vec<&ResourceType> = RESOURCES.iter().filter(|r| gv_path(r) == gv).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in served {
        let prefix = if rt.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("/{gv}/{}", rt.plural)
        };
        paths.insert(
            prefix.clone(),
            json!({ "get": operation(rt, "list", false), "post": operation(rt, "post", true) }),
        );
        paths.insert(
            format!("{prefix}/{{name}}"),
            json!({
                "get": operation(rt, "get", false),
                "put": operation(rt, "put", true),
                "patch": operation(rt, "patch", true),
                "delete": operation(rt, "delete", false),
            }),
        );
        schemas.insert(schema_name(rt), kind_schema(rt));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// Whether an `Accept` header asks for a `meta.k8s.io` Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|m| m.contains("as=Table") && m.contains("g=meta.k8s.io"))
}

/// The value at a printer column's simple JSONPath (`.a.b.c`), if present.
fn lookup<'a>(obj: &'a Value, json_path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in json_path.trim_start_matches('.').split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// Kubernetes' short age (`HumanDuration`): 42s, 3m12s, 15m, 2h5m, 3d4h, 12d.
pub fn human_age(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if m < 10 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn age_of(timestamp: &str) -> Value {
    let Ok(t) = humantime::parse_rfc3339(timestamp) else {
        return Value::Null;
    };
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!(human_age(secs))
}

/// A `meta.k8s.io/v1` Table of `items` with the resource's printer columns (plus Name first),
/// as the API server computes it for a custom resource. `include_object` is the request's
/// `includeObject` (`None`, `Metadata` (default) or `Object`).
pub fn table(columns: &[Value], items: &[Value], rv: &str, include_object: &str) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in columns {
        defs.push(json!({
            "name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj.pointer("/metadata/name").cloned().unwrap_or_default()];
            for c in columns {
                let path = c["jsonPath"].as_str().unwrap_or_default();
                let cell = match lookup(obj, path) {
                    Some(Value::String(s)) if c["type"] == "date" => age_of(s),
                    Some(v) => v.clone(),
                    None => Value::Null,
                };
                cells.push(cell);
            }
            let object = match include_object {
                "None" => Value::Null,
                "Object" => obj.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or_default(),
                }),
            };
            json!({ "cells": cells, "object": object })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": rv },
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_patch_field_validation() {
        let root = root();
        let paths = root["paths"].as_object().map(|p| p.len()).unwrap_or(0);
        assert!(paths >= 4, "{root}");
        let doc = group_version("/openapi/v3/apis/crd.traceflow.io/v1beta1").unwrap_or_default();
        let patch = &doc["paths"]["/apis/crd.traceflow.io/v1beta1/traceflows/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Traceflow"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["name"] == "fieldValidation"))
        );
        let schema = &doc["components"]["schemas"]["io.traceflow.crd.v1beta1.Traceflow"];
        assert_eq!(
            schema.pointer("/properties/spec/properties/timeout/maximum"),
            Some(&json!(300))
        );
        assert!(group_version("/openapi/v3/apis/nope/v1").is_none());
    }

    #[test]
    fn tables_hold_printer_columns_and_ages() {
        let cols = crd::traceflow().columns.clone();
        let obj = json!({"metadata": {"name": "t", "creationTimestamp": "2020-01-01T00:00:00Z"},
                         "spec": {"source": {"pod": "p0"}}, "status": {"phase": "Succeeded"}});
        let t = table(&cols, &[obj], "5", "Metadata");
        assert_eq!(t["columnDefinitions"][1]["name"], "Phase");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "t");
        assert_eq!(cells[1], "Succeeded");
        assert_eq!(cells[2], "p0");
        assert_eq!(cells[3], Value::Null);
        assert!(cells[cols.len()].as_str().is_some_and(|a| a.ends_with('d')));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            [human_age(5), human_age(200), human_age(3 * 3600 + 120)],
            ["5s", "3m20s", "3h2m"]
        );
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
