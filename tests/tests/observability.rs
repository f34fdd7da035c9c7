//! Observability end to end (DESIGN "Observability"): a one-Node lab whose daemons export
//! spans to an in-process OTLP receiver (the lab's daemons inherit
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), one real trace, then
//! - spans of traceflow-manager, -adapter and -agent arrive with one trace id, parent-linked:
//!   manager `create_traceflow` → adapter `trace` → `inject` → agent `inject` → `observation`;
//! - `GET /metrics` on the manager's TLS port with a view user's bearer token shows the trace
//!   counters move; no token or a wrong one is refused with 401.
//!
//! Needs root, Open vSwitch, curl and the workspace's binaries; fails loudly, never skips.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Lab, bin_dir, require_lab_prerequisites, text, topology};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

fn any_value(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .map(any_value)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(Span {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    kv.value.as_ref().map(any_value).unwrap_or_default(),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(got);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts the receiver on loopback in its own runtime thread; returns its address.
fn start_receiver(rx: Receiver) -> SocketAddr {
    let (tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => panic!("bind: {e}"),
            };
            let _ = tx.send(listener.local_addr());
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(rx))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
    });
    match addr_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(a)) => a,
        other => panic!("OTLP receiver did not start: {other:?}"),
    }
}

/// `curl` GET of `url` with an optional bearer token; returns (HTTP status, body).
fn scrape(url: &str, ca: &std::path::Path, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = match cmd.arg(url).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run curl (apt-get install -y curl): {e}"),
    };
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the sample line `series` (exact labels) in an exposition, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn spans_link_manager_adapter_agent_and_metrics_move() {
    require_lab_prerequisites();
    common::trace::require_binaries();
    let receiver = Receiver::default();
    let otlp = start_receiver(receiver.clone());
    let mut lab = Lab::new("ob");
    lab.env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        format!("http://{otlp}"),
    ));
    // Export every 200 ms instead of 5 s, so the test does not wait on batching.
    lab.env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let out = lab.up(&topology("one-node.yaml"), &["--ready-timeout", "60s"]);
    let last = out.lines().last().unwrap_or_default().to_string();
    let Some(cfg) = last.strip_prefix("export TFCTL_CONFIG=") else {
        panic!("last stdout line of up is not `export TFCTL_CONFIG=...`: {out}");
    };
    let dump = || lab.dump();

    // A view user with a bearer token, through the running manager.
    let mdir = lab.dir.join("manager");
    let user = Command::new(bin_dir().join("traceflow-manager"))
        .args([
            "user",
            "create",
            "scraper",
            "--role",
            "view",
            "--token",
            "--data-dir",
        ])
        .arg(&mdir)
        .arg("--out")
        .arg(lab.dir.join("scraper"))
        .output();
    let user = match user {
        Ok(u) => u,
        Err(e) => panic!("cannot run traceflow-manager user create: {e}"),
    };
    assert!(
        user.status.success(),
        "user create: {}\n{}",
        text(&user),
        dump()
    );
    let token = String::from_utf8_lossy(&user.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no token printed: {}", text(&user)));
    let addr = std::fs::read_to_string(mdir.join("listen.addr")).unwrap_or_default();
    let url = format!("https://{}/metrics", addr.trim());
    let ca = mdir.join("ca.pem");

    // Refused without credentials or with a wrong token.
    let (code, body) = scrape(&url, &ca, None);
    assert_eq!(code, 401, "unauthenticated scrape: {body}");
    let (code, _) = scrape(&url, &ca, Some("not-a-token"));
    assert_eq!(code, 401, "wrong-token scrape");
    let (code, before) = scrape(&url, &ca, Some(&token));
    assert_eq!(code, 200, "scrape: {before}");
    let succeeded = "traceflow_traces_total{phase=\"Succeeded\"}";
    let pending = "traceflow_traces_total{phase=\"Pending\"}";
    assert_eq!(
        sample(&before, "traceflow_connected_clusters"),
        1.0,
        "{before}"
    );

    // One real trace.
    let started = Instant::now();
    let trace = common::trace::tfctl(
        std::path::Path::new(&cfg),
        &[
            "traceflow",
            "--cluster",
            "c1",
            "-S",
            "default/p0",
            "-D",
            "default/p1",
            "-o",
            "json",
        ],
    );
    assert!(
        trace.status.success(),
        "tfctl failed: {}\n{}",
        text(&trace),
        dump()
    );
    let v: serde_json::Value = serde_json::from_slice(&trace.stdout).unwrap_or_default();
    let uid = v
        .get("uid")
        .or_else(|| v.pointer("/metadata/uid"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    println!("trace {uid} done in {:?}", started.elapsed());

    // Metrics: the trace's phases were counted, its latency observed; the agent's packet-ins
    // arrive with the next counters push and adapter heartbeat.
    let agent_series = "traceflow_agent_packet_ins_total{cluster=\"c1\",node=\"n1\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (code, body) = scrape(&url, &ca, Some(&token));
        assert_eq!(code, 200, "scrape: {body}");
        if sample(&body, agent_series) > sample(&before, agent_series)
            && sample(&body, succeeded) > sample(&before, succeeded)
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not move:\nbefore:\n{before}\nafter:\n{body}\n{}",
            dump()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        sample(&after, succeeded),
        sample(&before, succeeded) + 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, pending),
        sample(&before, pending) + 1.0,
        "{after}"
    );
    assert!(
        sample(&after, "traceflow_trace_duration_seconds_count")
            > sample(&before, "traceflow_trace_duration_seconds_count"),
        "{after}"
    );
    assert!(
        sample(
            &after,
            "traceflow_agent_observations_total{cluster=\"c1\",node=\"n1\"}"
        ) >= 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "traceflow_connected_agents{cluster=\"c1\"}"),
        1.0,
        "{after}"
    );

    // Spans: wait for the whole chain of this trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let all = receiver.spans.lock().map(|s| s.clone()).unwrap_or_default();
        let root = all.iter().find(|s| {
            s.service == "traceflow-manager"
                && s.name == "create_traceflow"
                && s.attributes.get("uid").map(String::as_str) == Some(uid.as_str())
        });
        if let Some(root) = root {
            let mine: Vec<Span> = all
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            let has =
                |svc: &str, name: &str| mine.iter().any(|s| s.service == svc && s.name == name);
            if has("traceflow-adapter", "trace")
                && has("traceflow-agent", "inject")
                && has("traceflow-agent", "observation")
            {
                break mine;
            }
        }
        if Instant::now() > deadline {
            let names: Vec<String> = all
                .iter()
                .map(|s| format!("{}:{}:{}", s.service, s.name, s.trace_id))
                .collect();
            panic!(
                "spans of trace {uid} did not all arrive; got {names:?}\n{}",
                dump()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let find = |svc: &str, name: &str| -> Span {
        spans
            .iter()
            .find(|s| s.service == svc && s.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {svc} span {name}: {spans:#?}"))
    };
    let root = find("traceflow-manager", "create_traceflow");
    let a_trace = find("traceflow-adapter", "trace");
    let a_inject = find("traceflow-adapter", "inject");
    let g_inject = find("traceflow-agent", "inject");
    assert_eq!(
        a_trace.parent, root.span_id,
        "adapter trace ← manager create_traceflow"
    );
    assert_eq!(
        a_trace.attributes.get("phase").map(String::as_str),
        Some("Succeeded")
    );
    assert_eq!(
        a_inject.parent, a_trace.span_id,
        "adapter inject ← adapter trace"
    );
    assert_eq!(
        g_inject.parent, a_inject.span_id,
        "agent inject ← adapter inject"
    );
    let observations: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == "traceflow-agent" && s.name == "observation")
        .collect();
    assert!(
        observations.iter().all(|o| o.parent == g_inject.span_id),
        "agent observations ← agent inject: {observations:#?}"
    );
    let reports: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service == "traceflow-adapter" && s.name == "report")
        .collect();
    assert!(!reports.is_empty(), "adapter report spans: {spans:#?}");
    assert!(reports.iter().all(|r| r.parent == a_trace.span_id));
    lab.down();
}
