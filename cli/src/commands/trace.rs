//! Trace verbs: `traceflow` (create and follow), `get`, `list`, `watch`, `delete`, `retrace`.

use std::time::Duration;

use tokio_stream::StreamExt;
use traceflow_core::TraceSpec;
use traceflow_proto::v1::{self as pb, TraceflowPhase};

use super::{CliError, rpc};
use crate::{
    client::{Chan, Clients},
    flow,
    output::{self, Format, Machine},
    spec::{self, DestinationKind, Endpoint, SpecError, TraceFlags},
    tables,
    term::{self, Spinner},
};

type TraceClient = pb::traceflow_service_client::TraceflowServiceClient<Chan>;

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
    traceflow_core::phase::is_terminal(traceflow_core::phase::of(t))
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

/// How long to follow a trace: its timeout (default 20 s) plus 10 s for the manager to
/// report the timeout itself.
fn wait_for(t: &pb::Traceflow) -> Duration {
    let secs = t.spec.as_ref().map_or(0, |s| s.timeout);
    let secs = u64::try_from(secs)
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(u64::from(traceflow_core::limits::DEFAULT_TIMEOUT_SECS));
    Duration::from_secs(secs) + Duration::from_secs(10)
}

/// Prints one trace in `format`.
pub fn print_trace(t: &pb::Traceflow, format: Format) -> Result<(), CliError> {
    match format.machine() {
        Some(m) => print!("{}", output::render(&output::trace_output(t), m)?),
        None => print!(
            "{}",
            tables::trace(t, format == Format::Wide, term::colour_stdout())
        ),
    }
    Ok(())
}

/// What `tfctl traceflow` can refuse without the manager: the flags, the flow, and the spec as
/// the manager converts it, for each kind the destination may turn out to be (a named one is a
/// Pod or a Service until the inventory says which, and a Service lends its port). A spec
/// valid for one of them waits for [`traceflow`], which checks it again once the kind is known.
pub fn precheck(flags: &TraceFlags, flow: &str, dst_service: bool) -> Result<(), CliError> {
    let endpoints = spec::check(flags)?;
    let packet = flow::parse_flow(flow)?.packet;
    let kinds: &[DestinationKind] = match &endpoints.destination {
        Some(Endpoint::Named { .. }) if dst_service => &[DestinationKind::Service],
        Some(Endpoint::Named { .. }) => &[DestinationKind::Pod, DestinationKind::Service],
        _ => &[DestinationKind::Pod],
    };
    // Named as the trace will be, so a refusal reads as the manager's would.
    let name = spec::trace_name(&endpoints, &spec::random_suffix());
    let mut first = None;
    for kind in kinds {
        let spec = spec::build_spec(flags, &endpoints, *kind, packet.clone());
        match TraceSpec::named(&name, spec) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(SpecError::Invalid(e).into()),
        None => Ok(()),
    }
}

/// Creates a trace and, unless `--nowait`, follows it to its end. Prints the trace; a Failed
/// trace is an error after printing.
pub async fn traceflow(clients: &mut Clients, opts: TraceOptions) -> Result<(), CliError> {
    let endpoints = spec::check(&opts.flags)?;
    let parsed = flow::parse_flow(&opts.flow)?;
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
    finish(&mut clients.traces, created, opts.no_wait, opts.output).await
}

/// Follows `created` (unless `no_wait`), prints the last snapshot, and turns a trace that did
/// not succeed into the matching error.
async fn finish(
    traces: &mut TraceClient,
    created: pb::Traceflow,
    no_wait: bool,
    format: Format,
) -> Result<(), CliError> {
    let last = if no_wait || is_terminal(&created) {
        created
    } else {
        let wait = wait_for(&created);
        let mut spinner = Spinner::start(&format!(
            "{} {}",
            created.name,
            output::phase_name(created.status.as_ref())
        ));
        let last = follow(traces, created, wait, |t| {
            spinner.set(status_line(t));
        })
        .await;
        spinner.stop();
        last?
    };
    print_trace(&last, format)?;
    if !no_wait && !is_terminal(&last) {
        return Err(CliError::WaitTimeout);
    }
    check_failed(&last)
}

/// `NAME Phase, N observations` for the spinner and `watch`.
fn status_line(t: &pb::Traceflow) -> String {
    let n: usize = t
        .status
        .as_ref()
        .map_or(0, |s| s.results.iter().map(|r| r.observations.len()).sum());
    format!(
        "{} {}, {n} observation{}",
        t.name,
        output::phase_name(t.status.as_ref()),
        if n == 1 { "" } else { "s" }
    )
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

/// Watches the trace until a terminal phase or `wait` passes; calls `seen` on every snapshot
/// and returns the last one. A broken stream (manager restart) is watched again.
async fn follow(
    traces: &mut TraceClient,
    mut last: pb::Traceflow,
    wait: Duration,
    mut seen: impl FnMut(&pb::Traceflow),
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
                    seen(&last);
                    if is_terminal(&last) {
                        return Ok(last);
                    }
                }
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

fn looks_like_uid(trace: &str) -> bool {
    trace.len() == 36 && trace.chars().filter(|c| *c == '-').count() == 4
}

/// A trace named by uid or by name.
fn by_uid_or_name(trace: &str) -> (String, String) {
    if looks_like_uid(trace) {
        (trace.to_string(), String::new())
    } else {
        (String::new(), trace.to_string())
    }
}

/// `tfctl get TRACE`: by uid or name. Exit 0 whatever the trace's phase.
pub async fn get(clients: &mut Clients, trace: &str, format: Format) -> Result<(), CliError> {
    let (uid, name) = by_uid_or_name(trace);
    let t = clients
        .traces
        .get_traceflow(pb::GetTraceflowRequest { uid, name })
        .await
        .map_err(rpc("getting the Traceflow"))?
        .into_inner();
    print_trace(&t, format)
}

/// `tfctl list` filters and paging.
#[derive(clap::Args)]
pub struct ListOptions {
    /// Only traces in this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only traces in this phase: Pending, Running, Succeeded or Failed.
    #[arg(long)]
    pub phase: Option<String>,
    /// Only traces from this source: namespace/pod or an IP.
    #[arg(long)]
    pub source: Option<String>,
    /// Only traces to this destination: namespace/name or an IP.
    #[arg(long)]
    pub destination: Option<String>,
    /// Only traces created in the last DURATION, e.g. 30m or 2h.
    #[arg(long, value_parser = crate::parse_duration)]
    pub since: Option<Duration>,
    /// Traces per page (1..1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub limit: i32,
    /// Start at this page (the token a previous page printed on stderr).
    #[arg(long = "continue", value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Every page, not only the first.
    #[arg(long, conflicts_with = "page_token")]
    pub all: bool,
}

fn parse_phase(p: &str) -> Result<i32, CliError> {
    ["Pending", "Running", "Succeeded", "Failed"]
        .iter()
        .find(|n| n.eq_ignore_ascii_case(p))
        .and_then(|n| TraceflowPhase::from_str_name(n))
        .map(|p| p as i32)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--phase {p:?} is not a phase: use Pending, Running, Succeeded or Failed"
            ))
        })
}

/// `tfctl list`: newest first, one page (or all with `--all`); in the table formats the next
/// page's `--continue` token goes to stderr.
pub async fn list(
    clients: &mut Clients,
    opts: ListOptions,
    format: Format,
) -> Result<(), CliError> {
    let phase = opts
        .phase
        .as_deref()
        .map(parse_phase)
        .transpose()?
        .unwrap_or(0);
    let created_after_micros = match opts.since {
        Some(d) => tables::now_micros() - i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2),
        None => 0,
    };
    let mut req = pb::ListTraceflowsRequest {
        cluster: opts.cluster.unwrap_or_default(),
        phase,
        source: opts.source.unwrap_or_default(),
        destination: opts.destination.unwrap_or_default(),
        created_after_micros,
        created_before_micros: 0,
        page_size: opts.limit,
        page_token: opts.page_token.unwrap_or_default(),
    };
    let mut traces = Vec::new();
    let next = loop {
        let resp = clients
            .traces
            .list_traceflows(req.clone())
            .await
            .map_err(rpc("listing Traceflows"))?
            .into_inner();
        traces.extend(resp.traceflows);
        if !opts.all || resp.next_page_token.is_empty() {
            break resp.next_page_token;
        }
        req.page_token = resp.next_page_token;
    };
    match format.machine() {
        Some(m) => {
            let all: Vec<_> = traces.iter().map(output::trace_output).collect();
            print!("{}", output::render(&all, m)?);
        }
        None => {
            print!(
                "{}",
                tables::trace_list(&traces, format == Format::Wide, term::colour_stdout())
            );
        }
    }
    if !next.is_empty() {
        eprintln!("more traces: add --continue {next} (or --all)");
    }
    Ok(())
}

/// `tfctl watch TRACE`: every status change as it happens (a line per snapshot in the table
/// formats, then the final trace; a YAML document or JSON object per snapshot otherwise).
/// Exit 1 when it ends Failed.
pub async fn watch(clients: &mut Clients, trace: &str, format: Format) -> Result<(), CliError> {
    let (uid, name) = by_uid_or_name(trace);
    let mut stream = clients
        .traces
        .watch_traceflow(pb::WatchTraceflowRequest { uid, name })
        .await
        .map_err(rpc("watching the Traceflow"))?
        .into_inner();
    let colour = term::colour_stdout();
    let mut last: Option<pb::Traceflow> = None;
    let mut first = true;
    while let Some(item) = stream.next().await {
        let t = item.map_err(rpc("watching the Traceflow"))?;
        match format.machine() {
            Some(Machine::Json) => print!(
                "{}",
                output::render(&output::trace_output(&t), Machine::Json)?
            ),
            Some(Machine::Yaml) => {
                if !first {
                    println!("---");
                }
                print!(
                    "{}",
                    output::render(&output::trace_output(&t), Machine::Yaml)?
                );
            }
            None => {
                let phase = output::phase_name(t.status.as_ref());
                let painted = if colour {
                    tables::phase_style(phase).paint(phase)
                } else {
                    phase.to_string()
                };
                println!(
                    "{}  {}  {}",
                    tables::utc(tables::now_micros(), true),
                    painted,
                    status_line(&t)
                );
            }
        }
        first = false;
        let done = is_terminal(&t);
        last = Some(t);
        if done {
            break;
        }
    }
    let Some(last) = last else {
        return Err(CliError::Usage(format!(
            "the manager sent nothing for {trace}"
        )));
    };
    if format.machine().is_none() {
        println!();
        print_trace(&last, format)?;
    }
    check_failed(&last)
}

/// `tfctl delete TRACE...`.
pub async fn delete(clients: &mut Clients, traces: &[String]) -> Result<(), CliError> {
    for trace in traces {
        let (uid, name) = by_uid_or_name(trace);
        clients
            .traces
            .delete_traceflow(pb::DeleteTraceflowRequest { uid, name })
            .await
            .map_err(rpc("deleting the Traceflow"))?;
        println!("traceflow {trace} deleted");
    }
    Ok(())
}

/// `tfctl retrace TRACE`: runs its spec again as a new trace and follows it like `traceflow`.
pub async fn retrace(
    clients: &mut Clients,
    trace: &str,
    no_wait: bool,
    format: Format,
) -> Result<(), CliError> {
    let (uid, name) = by_uid_or_name(trace);
    let created = clients
        .traces
        .retrace(pb::RetraceRequest { uid, name })
        .await
        .map_err(rpc("retracing the Traceflow"))?
        .into_inner();
    finish(&mut clients.traces, created, no_wait, format).await
}
