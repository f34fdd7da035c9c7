//! The subcommands: `traceflow`, `get`, `list`, `clusters`.

use std::time::Duration;

use tokio_stream::StreamExt;
use traceflow_core::{TraceSpec, phase};
use traceflow_proto::v1::{self as pb, TraceflowPhase};

use crate::{
    client::{Chan, Clients},
    flow::{self, FlowError},
    output::{self, Format},
    spec::{self, DestinationKind, Endpoint, SpecError, TraceFlags},
};

/// Errors a user sees; each says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("failed to parse flow: {0}")]
    Flow(#[from] FlowError),
    #[error("{action}: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        action: &'static str,
        status: tonic::Status,
    },
    #[error("Traceflow {name} failed: {reason}")]
    TraceFailed { name: String, reason: String },
    #[error("timeout waiting for Traceflow done")]
    WaitTimeout,
    #[error("rendering output: {0}")]
    Render(#[from] serde_json::Error),
}

fn rpc(action: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { action, status }
}

/// `tfctl traceflow` options beyond [`TraceFlags`].
pub struct TraceOptions {
    pub cluster: String,
    pub flags: TraceFlags,
    pub flow: String,
    pub output: Format,
    pub no_wait: bool,
    pub dst_service: bool,
}

fn is_terminal(t: &pb::Traceflow) -> bool {
    phase::is_terminal(phase::of(t))
}

/// Whether `namespace/name` is a Pod (antctl: a Pod if one exists, else a Service).
async fn destination_kind(
    clients: &mut Clients,
    cluster: &str,
    namespace: &str,
    name: &str,
) -> DestinationKind {
    let mut page_token = String::new();
    for _ in 0..100 {
        let req = pb::ListInventoryRequest {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let Ok(resp) = clients.clusters.list_pods(req).await else {
            return DestinationKind::Pod;
        };
        let resp = resp.into_inner();
        if resp
            .pods
            .iter()
            .any(|p| p.name == name && p.namespace == namespace)
        {
            return DestinationKind::Pod;
        }
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    let req = pb::ListInventoryRequest {
        cluster: cluster.to_string(),
        namespace: namespace.to_string(),
        page_size: 1000,
        ..Default::default()
    };
    match clients.clusters.list_services(req).await {
        Ok(r)
            if r.get_ref()
                .services
                .iter()
                .any(|s| s.name == name && s.namespace == namespace) =>
        {
            DestinationKind::Service
        }
        _ => DestinationKind::Pod,
    }
}

/// Creates a trace and, unless `--nowait`, follows it to its end. Prints the trace; a Failed
/// trace is an error after printing.
pub async fn traceflow(clients: &mut Clients, opts: TraceOptions) -> Result<(), CliError> {
    let endpoints = spec::check(&opts.flags)?;
    let parsed = flow::parse_flow(&opts.flow)?;
    if !parsed.ignored.is_empty() {
        eprintln!(
            "warning: ignoring flow field(s) tfctl does not know: {}",
            parsed.ignored.join(", ")
        );
    }
    let kind = match &endpoints.destination {
        Some(Endpoint::Named { .. }) if opts.dst_service => DestinationKind::Service,
        Some(Endpoint::Named {
            namespace, name, ..
        }) => destination_kind(clients, &opts.cluster, namespace, name).await,
        _ => DestinationKind::Pod,
    };
    let spec = spec::build_spec(&opts.flags, &endpoints, kind, parsed.packet);
    let name = spec::trace_name(&endpoints, &spec::random_suffix());
    // The manager's own rules, before anything is sent (the same conversion it runs).
    let spec = TraceSpec::named(&name, spec).map_err(SpecError::Invalid)?;
    let wait = spec.timeout + Duration::from_secs(10);
    let req = pb::CreateTraceflowRequest {
        cluster: opts.cluster.clone(),
        spec: Some(spec.into_proto()),
        name,
    };
    let created = clients
        .traces
        .create_traceflow(req)
        .await
        .map_err(rpc("error when creating Traceflow"))?
        .into_inner();
    let last = if opts.no_wait || is_terminal(&created) {
        created
    } else {
        follow(&mut clients.traces, created, wait).await?
    };
    print!(
        "{}",
        output::render(&output::trace_output(&last), opts.output)?
    );
    if !opts.no_wait && !is_terminal(&last) {
        return Err(CliError::WaitTimeout);
    }
    check_failed(&last)
}

fn check_failed(t: &pb::Traceflow) -> Result<(), CliError> {
    let status = t.status.clone().unwrap_or_default();
    if status.phase == TraceflowPhase::Failed as i32 {
        return Err(CliError::TraceFailed {
            name: t.name.clone(),
            reason: status.reason,
        });
    }
    Ok(())
}

/// Watches the trace until a terminal phase or `wait` passes; returns the last snapshot.
async fn follow(
    traces: &mut pb::traceflow_service_client::TraceflowServiceClient<Chan>,
    mut last: pb::Traceflow,
    wait: Duration,
) -> Result<pb::Traceflow, CliError> {
    let deadline = tokio::time::Instant::now() + wait;
    while !is_terminal(&last) && tokio::time::Instant::now() < deadline {
        let req = pb::WatchTraceflowRequest {
            uid: last.uid.clone(),
            name: String::new(),
        };
        let watched = tokio::time::timeout_at(deadline, traces.watch_traceflow(req)).await;
        let mut stream = match watched {
            Err(_) => break,
            Ok(r) => r.map_err(rpc("watching the Traceflow"))?.into_inner(),
        };
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(t))) => {
                    last = t;
                    if is_terminal(&last) {
                        return Ok(last);
                    }
                }
                // The stream broke (manager restart?): watch again after a pause.
                Ok(Some(Err(_))) | Ok(None) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                Err(_) => return Ok(last),
            }
        }
    }
    Ok(last)
}

/// `tfctl get TRACE`: by uid or name.
pub async fn get(clients: &mut Clients, trace: &str, format: Format) -> Result<(), CliError> {
    let by_uid = trace.len() == 36 && trace.chars().filter(|c| *c == '-').count() == 4;
    let req = if by_uid {
        pb::GetTraceflowRequest {
            uid: trace.to_string(),
            name: String::new(),
        }
    } else {
        pb::GetTraceflowRequest {
            uid: String::new(),
            name: trace.to_string(),
        }
    };
    let t = clients
        .traces
        .get_traceflow(req)
        .await
        .map_err(rpc("getting the Traceflow"))?
        .into_inner();
    print!("{}", output::render(&output::trace_output(&t), format)?);
    Ok(())
}

/// `tfctl list`: newest first, as a table or (with `-o`) the antctl-shaped objects.
pub async fn list(
    clients: &mut Clients,
    cluster: Option<String>,
    limit: i32,
    format: Option<Format>,
) -> Result<(), CliError> {
    let req = pb::ListTraceflowsRequest {
        cluster: cluster.unwrap_or_default(),
        page_size: limit,
        ..Default::default()
    };
    let resp = clients
        .traces
        .list_traceflows(req)
        .await
        .map_err(rpc("listing Traceflows"))?
        .into_inner();
    match format {
        Some(f) => {
            let all: Vec<_> = resp.traceflows.iter().map(output::trace_output).collect();
            print!("{}", output::render(&all, f)?);
        }
        None => {
            println!(
                "{:<40} {:<12} {:<10} {:<28} {:<28} REASON",
                "NAME", "CLUSTER", "PHASE", "SOURCE", "DESTINATION"
            );
            for t in &resp.traceflows {
                let o = output::trace_output(t);
                println!(
                    "{:<40} {:<12} {:<10} {:<28} {:<28} {}",
                    o.name, o.cluster, o.phase, o.source, o.destination, o.reason
                );
            }
        }
    }
    Ok(())
}

/// `tfctl clusters`: health and agents per cluster.
pub async fn clusters(clients: &mut Clients, format: Option<Format>) -> Result<(), CliError> {
    let resp = clients
        .clusters
        .list_clusters(pb::ListClustersRequest {})
        .await
        .map_err(rpc("listing clusters"))?
        .into_inner();
    match format {
        Some(f) => print!("{}", output::render(&resp, f)?),
        None => {
            println!("{:<20} {:<10} {:<8}", "NAME", "HEALTH", "AGENTS");
            for c in &resp.clusters {
                let health = pb::ClusterHealth::try_from(c.health).map_or("", |h| h.as_str_name());
                println!(
                    "{:<20} {:<10} {}/{}",
                    c.name, health, c.connected_agents, c.expected_agents
                );
            }
        }
    }
    Ok(())
}
