//! HTTPS front of the store: Kubernetes REST paths, bearer-token auth, list with paging, watch
//! as newline-delimited events.
//!
//! ```text
//!  TLS accept ─▶ hyper (http/1.1 or h2) ─▶ handle ─▶ route ─┬─ list/get ─▶ Store (Mutex)
//!                                                            ├─ create/replace/patch/delete
//!                                                            └─ watch: backlog + broadcast ─▶ body
//! ```

use std::{collections::HashMap, convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::Mutex};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::{
    crd, openapi,
    resources::{self, RESOURCES, ResourceType},
    selectors::{FieldSelector, LabelSelector},
    store::{EventType, Key, Store, StoreError},
};

type Body = BoxBody<Bytes, Infallible>;

/// Longest watch the server keeps open when the client asks for none (seconds).
const MAX_WATCH_SECONDS: u64 = 1800;
/// Interval between watch bookmarks when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);

/// Everything a request handler needs.
#[derive(Debug)]
pub struct ApiState {
    pub store: Mutex<Store>,
    /// The bearer token every request must present.
    pub token: String,
    /// Cluster name, for logs.
    pub cluster: String,
}

impl ApiState {
    pub fn new(cluster: &str, token: &str, store: Store) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(store),
            token: token.to_string(),
            cluster: cluster.to_string(),
        })
    }
}

/// Serves HTTPS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(error) => {
                    debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            if let Err(error) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                debug!(%error, %peer, "connection ended");
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A Kubernetes `Status` failure.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

/// A failure decided before a response exists; becomes a `Status` response.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        status(self.code, self.reason, &self.message)
    }
}

fn fail(code: u16, reason: &'static str, message: &str) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.to_string(),
    }
}

fn store_error(e: &StoreError) -> Response<Body> {
    let (code, reason) = e.code_reason();
    let mut resp = status(code, reason, &e.to_string());
    if let Some(details) = e.details() {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": e.to_string(), "reason": reason,
            "details": details, "code": code,
        });
        resp = json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            &body,
        );
    }
    resp
}

/// Under `fieldValidation=Strict` (kubectl's default), fields a CRD does not declare are an
/// error, in the API server's words; otherwise the store prunes them.
fn strict_unknown_fields(
    rt: &ResourceType,
    query: &HashMap<String, String>,
    body: &Value,
) -> Option<Response<Body>> {
    let c = crd::for_resource(rt)?;
    if query.get("fieldValidation").map(String::as_str) != Some("Strict") {
        return None;
    }
    let unknown = crd::prune(&c.schema, &mut body.clone(), "");
    if unknown.is_empty() {
        return None;
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Some(status(
        400,
        "BadRequest",
        &format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = rt.kind,
            v = rt.version,
        ),
    ))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn route(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    let find = |plural: &str| -> Result<(usize, &'static ResourceType), ApiError> {
        resources::by_path(group, version, plural).ok_or_else(|| {
            fail(
                404,
                "NotFound",
                &format!(
                    "the server could not find the requested resource ({group}/{version}, {plural})"
                ),
            )
        })
    };
    let t = match rest {
        [] => return Ok(None),
        ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => {
            let (resource, rt) = find(plural)?;
            if !rt.namespaced {
                return Err(fail(
                    404,
                    "NotFound",
                    &format!("{plural} is cluster-scoped"),
                ));
            }
            let (name, st) = match more {
                [] => (None, false),
                [name] => (Some(name.to_string()), false),
                [name, "status"] => (Some(name.to_string()), true),
                _ => return Err(fail(404, "NotFound", "unknown subresource")),
            };
            Target {
                resource,
                namespace: Some(ns.to_string()),
                name,
                status: st,
            }
        }
        [plural, more @ ..] => {
            let (resource, rt) = find(plural)?;
            let (name, st) = match more {
                [] => (None, false),
                [name] => (Some(name.to_string()), false),
                [name, "status"] => (Some(name.to_string()), true),
                _ => return Err(fail(404, "NotFound", "unknown subresource")),
            };
            if rt.namespaced && name.is_some() {
                return Err(fail(
                    404,
                    "NotFound",
                    &format!("{plural} is namespaced: use /namespaces/<ns>/{plural}/<name>"),
                ));
            }
            Target {
                resource,
                namespace: None,
                name,
                status: st,
            }
        }
    };
    Ok(Some(t))
}

fn authorized(state: &ApiState, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == state.token)
}

async fn handle(state: Arc<ApiState>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = handle_inner(&state, req).await;
    info!(cluster = %state.cluster, %method, %path, status = resp.status().as_u16(), "request");
    resp
}

async fn handle_inner(state: &Arc<ApiState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/livez") {
        return Response::new(full("ok"));
    }
    if !authorized(state, &req) {
        return status(
            401,
            "Unauthorized",
            "Unauthorized: a valid bearer token is required",
        );
    }
    if path == "/openapi/v3" {
        return json_response(StatusCode::OK, &openapi::root());
    }
    if path.starts_with("/openapi/v3/") {
        return match openapi::group_version(&path) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => status(404, "NotFound", &format!("no OpenAPI document at {path}")),
        };
    }
    if let Some(resp) = discovery(&path) {
        return resp;
    }
    let target = match route(&path) {
        Ok(Some(t)) => t,
        Ok(None) => return status(404, "NotFound", &format!("no route for {path}")),
        Err(e) => return e.into_response(),
    };
    let query = query_map(req.uri().query());
    let method = req.method().clone();
    let table = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(openapi::wants_table);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", &format!("reading body: {e}")),
    };
    let rt = match RESOURCES.get(target.resource) {
        Some(rt) => rt,
        None => return status(500, "InternalError", "resource table"),
    };
    match (&method, &target.name) {
        (&Method::GET, None) => {
            let watch = matches!(
                query.get("watch").map(String::as_str),
                Some("true") | Some("1")
            );
            if watch {
                watch_response(state, &target, rt, &query).await
            } else {
                list(state, &target, rt, &query, table).await
            }
        }
        (&Method::GET, Some(name)) => {
            let key = key_of(&target, name);
            let store = state.store.lock().await;
            match store.get(&key) {
                Ok(v) => match crd::columns(rt).filter(|_| table) {
                    Some(cols) => {
                        let rv = store.resource_version().to_string();
                        json_response(StatusCode::OK, &table_of(cols, &[v], &rv, &query))
                    }
                    None => json_response(StatusCode::OK, &v),
                },
                Err(e) => store_error(&e),
            }
        }
        (&Method::POST, None) => {
            let obj = match parse_body(&body, &content_type) {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            if let Some(refused) = strict_unknown_fields(rt, &query, &obj) {
                return refused;
            }
            let ns = target.namespace.clone().unwrap_or_default();
            if rt.namespaced {
                if ns.is_empty() {
                    return status(
                        400,
                        "BadRequest",
                        "create a namespaced object under /namespaces/<ns>/",
                    );
                }
                if let Some(bns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
                    && bns != ns
                {
                    return status(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    );
                }
            }
            match state.store.lock().await.create(target.resource, &ns, obj) {
                Ok(v) => json_response(StatusCode::CREATED, &v),
                Err(e) => store_error(&e),
            }
        }
        (&Method::PUT, Some(name)) => {
            let obj = match parse_body(&body, &content_type) {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            if let Some(refused) = strict_unknown_fields(rt, &query, &obj) {
                return refused;
            }
            let key = key_of(&target, name);
            match state.store.lock().await.replace(&key, obj, target.status) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => store_error(&e),
            }
        }
        (&Method::PATCH, Some(name)) => {
            if content_type.starts_with("application/json-patch") {
                return status(
                    415,
                    "UnsupportedMediaType",
                    "the lab API supports merge, strategic-merge and apply patches, not JSON patch",
                );
            }
            let patch = match parse_body(&body, &content_type) {
                Ok(v) => v,
                Err(e) => return e.into_response(),
            };
            if let Some(refused) = strict_unknown_fields(rt, &query, &patch) {
                return refused;
            }
            let key = key_of(&target, name);
            let mut store = state.store.lock().await;
            let apply = content_type.starts_with("application/apply-patch");
            let result = match store.patch(&key, &patch, target.status) {
                Err(StoreError::NotFound { .. }) if apply && !target.status => {
                    let mut obj = patch.clone();
                    crate::topology::set(&mut obj, "/metadata/name", json!(name));
                    store.create(target.resource, &key.namespace, obj)
                }
                other => other,
            };
            match result {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => store_error(&e),
            }
        }
        (&Method::DELETE, Some(name)) => {
            let key = key_of(&target, name);
            match state.store.lock().await.delete(&key) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => store_error(&e),
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            &format!("{method} is not supported on {path}"),
        ),
    }
}

fn key_of(target: &Target, name: &str) -> Key {
    Key {
        resource: target.resource,
        namespace: target.namespace.clone().unwrap_or_default(),
        name: name.to_string(),
    }
}

fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    let parsed: Result<Value, String> = if content_type.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(fail(400, "BadRequest", "body must be an object")),
        Err(e) => Err(fail(400, "BadRequest", &format!("cannot decode body: {e}"))),
    }
}

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn from_query(target: &Target, q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| fail(400, "BadRequest", &format!("labelSelector: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
            .map_err(|e| fail(400, "BadRequest", &format!("fieldSelector: {e}")))?;
        Ok(Self {
            namespace: target.namespace.clone(),
            labels,
            fields,
        })
    }

    fn matches(&self, key: &Key, obj: &Value) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| key.namespace == *ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

fn table_of(cols: &[Value], items: &[Value], rv: &str, q: &HashMap<String, String>) -> Value {
    let include = q.get("includeObject").map_or("Metadata", String::as_str);
    openapi::table(cols, items, rv, include)
}

async fn list(
    state: &ApiState,
    target: &Target,
    rt: &ResourceType,
    q: &HashMap<String, String>,
    table: bool,
) -> Response<Body> {
    let filter = match Filter::from_query(target, q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (rv, items) = {
        let store = state.store.lock().await;
        (
            store.resource_version(),
            store.list(target.resource, target.namespace.as_deref()),
        )
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|(k, v)| filter.matches(k, v))
        .map(|(_, v)| v)
        .collect();
    // continue token: "<rv>.<offset>" (the lab's objects rarely change between pages).
    let (list_rv, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(tok) => match tok
            .split_once('.')
            .and_then(|(r, o)| Some((r.parse::<u64>().ok()?, o.parse::<usize>().ok()?)))
        {
            Some(x) => x,
            None => return status(400, "BadRequest", "invalid continue token"),
        },
        None => (rv, 0),
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = offset.saturating_add(page.len());
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if next < items.len() {
        crate::topology::set(
            &mut metadata,
            "/continue",
            json!(format!("{list_rv}.{next}")),
        );
        crate::topology::set(
            &mut metadata,
            "/remainingItemCount",
            json!(items.len() - next),
        );
    }
    if let Some(cols) = crd::columns(rt).filter(|_| table) {
        let mut t = table_of(cols, &page, &list_rv.to_string(), q);
        t["metadata"] = metadata;
        return json_response(StatusCode::OK, &t);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": rt.api_version(),
            "kind": rt.list_kind(),
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch_response(
    state: &Arc<ApiState>,
    target: &Target,
    rt: &'static ResourceType,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let filter = match Filter::from_query(target, q) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let requested = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(MAX_WATCH_SECONDS)
        .min(MAX_WATCH_SECONDS);
    let resource = target.resource;

    let mut initial: Vec<Bytes> = Vec::new();
    let (start_rv, mut rx) = {
        let store = state.store.lock().await;
        let now = store.resource_version();
        if send_initial || requested.is_empty() || requested == "0" {
            for (k, v) in store.list(resource, target.namespace.as_deref()) {
                if filter.matches(&k, &v) {
                    initial.push(event_line("ADDED", &v));
                }
            }
            if send_initial {
                initial.push(event_line(
                    "BOOKMARK",
                    &json!({"apiVersion": rt.api_version(), "kind": rt.kind,
                            "metadata": {"resourceVersion": now.to_string(),
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}),
                ));
            }
            match store.watch_from(now) {
                Ok((_, rx)) => (now, rx),
                Err(e) => return store_error(&e),
            }
        } else {
            let Ok(from) = requested.parse::<u64>() else {
                return status(400, "BadRequest", "resourceVersion must be a number");
            };
            match store.watch_from(from) {
                Ok((backlog, rx)) => {
                    for ev in backlog {
                        if ev.key.resource == resource && filter.matches(&ev.key, &ev.object) {
                            initial.push(event_line(ev.kind.as_str(), &ev.object));
                        }
                    }
                    (now, rx)
                }
                Err(e) => return store_error(&e),
            }
        }
    };

    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let cluster = state.cluster.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        loop {
            let line = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => event_line(
                    "BOOKMARK",
                    &json!({"apiVersion": rt.api_version(), "kind": rt.kind,
                            "metadata": {"resourceVersion": last_rv.to_string()}}),
                ),
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if ev.key.resource != resource || !filter.matches(&ev.key, &ev.object) {
                            continue;
                        }
                        let kind = match ev.kind {
                            EventType::Added => "ADDED",
                            EventType::Modified => "MODIFIED",
                            EventType::Deleted => "DELETED",
                        };
                        event_line(kind, &ev.object)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(%cluster, skipped = n, "watcher lagged; closing with 410");
                        let _ = tx.send(event_line("ERROR", &json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Expired", "code": 410,
                            "message": "watcher fell behind; re-list",
                        }))).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body_rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Minimal discovery documents, enough for `kubectl get` and friends.
fn discovery(path: &str) -> Option<Response<Body>> {
    let p = path.trim_end_matches('/');
    if p == "/version" {
        return Some(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-traceflow-lab",
                    "platform": "linux/amd64"}),
        ));
    }
    if p == "/api" {
        return Some(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": []}),
        ));
    }
    if p == "/apis" {
        let mut groups: Vec<(&str, &str)> = RESOURCES
            .iter()
            .filter(|r| !r.group.is_empty())
            .map(|r| (r.group, r.version))
            .collect();
        groups.dedup();
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
            })
            .collect();
        return Some(json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        ));
    }
    let gv = if let Some(v) = p.strip_prefix("/api/") {
        (!v.contains('/')).then_some(("", v))
    } else if let Some(rest) = p.strip_prefix("/apis/") {
        match rest.split('/').collect::<Vec<_>>().as_slice() {
            [g, v] => Some((*g, *v)),
            _ => None,
        }
    } else {
        None
    };
    let (group, version) = gv?;
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let verbs = json!([
                "create", "delete", "get", "list", "patch", "update", "watch"
            ]);
            [
                json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                       "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs,
                       "shortNames": crd::short_names(r)}),
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                       "namespaced": r.namespaced, "kind": r.kind,
                       "verbs": ["get", "patch", "update"]}),
            ]
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": resources}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |p: &str| route(p).ok().flatten();
        let pods = r("/api/v1/pods");
        assert_eq!(
            pods.map(|t| (t.resource, t.namespace)),
            Some((resources::POD, None))
        );
        let t = r("/api/v1/namespaces/default/pods/p0/status");
        assert_eq!(
            t,
            Some(Target {
                resource: resources::POD,
                namespace: Some("default".into()),
                name: Some("p0".into()),
                status: true
            })
        );
        let ns = r("/api/v1/namespaces/default");
        assert_eq!(
            ns.map(|t| (t.resource, t.name)),
            Some((resources::NAMESPACE, Some("default".into())))
        );
        let tf = r("/apis/crd.traceflow.io/v1beta1/traceflows/x/status");
        assert!(tf.is_some_and(|t| t.status && t.namespace.is_none()));
        assert!(route("/apis/crd.antrea.io/v1beta1/namespaces/a/tiers").is_err());
        assert!(route("/api/v1/configmaps").is_err());
    }

    #[test]
    fn query_decoding() {
        let q = query_map(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1"));
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("app=web,tier in (a)")
        );
        assert_eq!(q.get("watch").map(String::as_str), Some("1"));
    }
}
