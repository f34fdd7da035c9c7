//! Faults under trace load (issue 10, README "Consistency under faults"): one lab of two
//! clusters of two Nodes (tests/topologies/faults.yaml), real binaries, real OVS. In turn:
//!  a. SIGKILL of the manager, then `traceflow-lab restart manager`;
//!  b. SIGKILL of c1's adapter, restarted;
//!  c. SIGKILL of c1's agent on n2 (with a live-traffic trace waiting for n2), restarted;
//!  d. SIGKILL of ovs-vswitchd of n2, restarted (the agent reprograms it by itself);
//!  e. n2's underlay link cut (`ip link set u-n2 down` in c1's underlay namespace), then back;
//!  f. beside c. to e., c2's agent on m2 frozen (SIGSTOP: a hung agent or a half-open link; its
//!     TCP connection stays up and nothing answers), then thawed.
//!
//! Each runs under load: creators keep calling CreateTraceflow on both clusters (mixed same-Node
//! and inter-Node traces) across the fault, and a batch created while the Nodes' agents are
//! paused (SIGSTOP) is sure to be in flight when the fault strikes. Every trace the manager
//! accepted must then end Succeeded, or Failed with a reason (none stuck Running; no uid or
//! name twice; none lost), and a new trace through the faulted part must succeed. Bounds
//! asserted: agent loss fails the traces needing its Node within 1 s with
//! `Node: n2, error: agent disconnected`; a restarted adapter gets the rest failed naming its
//! cluster; every restarted component works again (a trace through it succeeds) within 5 s; a
//! frozen agent is noticed by HTTP/2 keepalive (interval + timeout, 15 s) and its traces fail
//! naming its Node.
//! Figures (kill → the last trace in flight ended, by the end times the product recorded;
//! restart → working again) are printed.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::trace::{
    Api, is_terminal, phase, require_binaries, runtime, spec, to_pod, up_with_config,
};
use common::{Lab, Paused, require_lab_prerequisites, topology};
use futures::{StreamExt, stream};
use traceflow_proto::v1 as pb;

/// Timeout of the traces of the running load: short, so what a fault loses ends soon.
const LOAD_TIMEOUT: i32 = 3;
/// Timeout of a paused batch: longer than the agents stay paused (about a second).
const BATCH_TIMEOUT: i32 = 10;
/// The same where the fault loses packets, so the batch waits for it.
const SHORT_BATCH_TIMEOUT: i32 = 4;
/// Concurrent creators of the running load.
const CREATORS: usize = 6;
/// A restarted component must work again (a trace through it succeeds) within this.
const RECONNECT_BOUND: Duration = Duration::from_secs(5);
/// Live-traffic traces one cluster runs at once (Antrea's DSCP tag space).
const LIVE_TAGS: usize = 14;
/// An agent's loss must fail the traces that need its Node within this.
const AGENT_LOSS_BOUND: Duration = Duration::from_secs(1);
/// A frozen agent must be noticed within the keepalive's interval and timeout, plus this.
const FROZEN_SLACK: Duration = Duration::from_secs(2);

/// One kind of trace of the mix, the same in both clusters (faults.yaml): Pods a0, a1 on the
/// first Node, b0, b1 on the second.
#[derive(Debug, Clone, Copy)]
struct Kind {
    src: &'static str,
    dst: &'static str,
    /// Which of the cluster's two Nodes (0, 1) it needs.
    nodes: &'static [usize],
}

const KINDS: [Kind; 4] = [
    Kind {
        src: "default/a0",
        dst: "default/a1",
        nodes: &[0],
    },
    Kind {
        src: "default/b0",
        dst: "default/b1",
        nodes: &[1],
    },
    Kind {
        src: "default/a0",
        dst: "default/b0",
        nodes: &[0, 1],
    },
    Kind {
        src: "default/b1",
        dst: "default/a1",
        nodes: &[0, 1],
    },
];

/// Node names per cluster, in the order of [`Kind::nodes`].
fn nodes_of(cluster: &str) -> [&'static str; 2] {
    if cluster == "c1" {
        ["n1", "n2"]
    } else {
        ["m1", "m2"]
    }
}

impl Kind {
    fn inter_node(&self) -> bool {
        self.nodes.len() > 1
    }

    fn needs(&self, cluster: &str, node: &str) -> bool {
        let names = nodes_of(cluster);
        self.nodes.iter().any(|&i| names[i] == node)
    }

    fn spec(&self, timeout: i32) -> pb::TraceflowSpec {
        let mut s = spec(self.src, to_pod(self.dst), None);
        s.timeout = timeout;
        s
    }
}

/// A trace the manager accepted.
#[derive(Debug, Clone)]
struct Accepted {
    uid: String,
    cluster: String,
    kind: usize,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Creates `per_kind` traces of each kind in `cluster`, 32 calls at a time; each must be
/// accepted.
async fn batch(
    api: &Api,
    cluster: &str,
    per_kind: usize,
    timeout: i32,
) -> Result<Vec<Accepted>, String> {
    let created: Vec<Result<Accepted, String>> = stream::iter(0..per_kind * KINDS.len())
        .map(|i| {
            let mut api = api.clone();
            let kind = i % KINDS.len();
            let cluster = cluster.to_string();
            async move {
                api.create(&cluster, KINDS[kind].spec(timeout))
                    .await
                    .map(|t| Accepted {
                        uid: t.uid,
                        cluster: cluster.clone(),
                        kind,
                    })
                    .map_err(|s| format!("batch create #{i} in {cluster}: {s:?}"))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect()
}

/// The running load: creators calling CreateTraceflow on `clusters` until stopped; what was
/// accepted, and how many calls were refused (with a few of the errors).
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    refused: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(api: &Api, clusters: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..CREATORS)
            .map(|n| {
                let mut api = api.clone();
                let clusters: Vec<String> = clusters.iter().map(ToString::to_string).collect();
                let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
                tokio::spawn(async move {
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        let kind = i % KINDS.len();
                        let cluster = &clusters[(i / KINDS.len()) % clusters.len()];
                        i += 1;
                        let call = api.create(cluster, KINDS[kind].spec(LOAD_TIMEOUT));
                        match tokio::time::timeout(Duration::from_secs(5), call).await {
                            Ok(Ok(t)) => lock(&accepted).push(Accepted {
                                uid: t.uid,
                                cluster: cluster.clone(),
                                kind,
                            }),
                            Ok(Err(s)) => {
                                lock(&refused).push(format!("{:?}: {}", s.code(), s.message()))
                            }
                            Err(_) => lock(&refused).push("no answer within 5 s".into()),
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            refused,
            tasks,
        }
    }

    /// Stops the creators: what they got accepted, and the refusals (counted by kind).
    async fn stop(self) -> (Vec<Accepted>, BTreeMap<String, usize>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut refused = BTreeMap::new();
        for r in lock(&self.refused).iter() {
            // Counted by their first words (the call's code and the start of the message).
            let key: String = r.chars().take(60).collect();
            *refused.entry(key).or_insert(0) += 1;
        }
        let accepted = std::mem::take(&mut *lock(&self.accepted));
        (accepted, refused)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every trace of `cluster` created at or after `since` per the manager (all pages).
async fn list_since(
    api: &mut Api,
    cluster: &str,
    since: i64,
) -> Result<Vec<pb::Traceflow>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListTraceflowsRequest {
            cluster: cluster.into(),
            created_after_micros: since,
            page_size: 1000,
            page_token: token.clone(),
            ..Default::default()
        };
        let resp = api
            .traces
            .list_traceflows(req)
            .await
            .map_err(|s| format!("ListTraceflows {cluster}: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        out.extend(resp.traceflows);
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        token = resp.next_page_token;
    }
}

/// Polls the manager until every trace of `want` has ended (or `within` passes). Returns how
/// long that took from `from`, and the manager's traces of those clusters since `since`
/// (for [`check_ended`]).
async fn wait_ended(
    api: &Api,
    want: &[Accepted],
    since: i64,
    from: Instant,
    within: Duration,
) -> Result<(Duration, Vec<pb::Traceflow>), String> {
    let mut api = api.clone();
    let clusters: HashSet<&str> = want.iter().map(|a| a.cluster.as_str()).collect();
    let uids: HashSet<&str> = want.iter().map(|a| a.uid.as_str()).collect();
    let deadline = Instant::now() + within;
    loop {
        let mut all = Vec::new();
        for c in &clusters {
            all.extend(list_since(&mut api, c, since).await?);
        }
        let open: Vec<&pb::Traceflow> = all
            .iter()
            .filter(|t| uids.contains(t.uid.as_str()) && !is_terminal(t))
            .collect();
        if open.is_empty() {
            return Ok((from.elapsed(), all));
        }
        if Instant::now() > deadline {
            let sample: Vec<String> = open
                .iter()
                .take(5)
                .map(|t| format!("{} {} ({})", t.uid, t.name, phase(t)))
                .collect();
            return Err(format!(
                "{} of {} traces not ended {within:?} after waiting began; e.g. {sample:?}",
                open.len(),
                want.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn reason(t: &pb::Traceflow) -> &str {
    t.status.as_ref().map_or("", |s| s.reason.as_str())
}

/// Every accepted trace present once, ended, and Failed only with a reason; no uid or name
/// twice among the manager's traces.
fn check_ended(listed: &[pb::Traceflow], want: &[Accepted]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut by_uid: HashMap<&str, usize> = HashMap::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for t in listed {
        *by_uid.entry(&t.uid).or_default() += 1;
        *by_name.entry(&t.name).or_default() += 1;
    }
    let dup_uids: Vec<_> = by_uid.iter().filter(|(_, n)| **n > 1).collect();
    let dup_names: Vec<_> = by_name.iter().filter(|(_, n)| **n > 1).collect();
    if !dup_uids.is_empty() || !dup_names.is_empty() {
        failures.push(format!(
            "duplicates: uids {dup_uids:?}, names {dup_names:?}"
        ));
    }
    let index: HashMap<&str, &pb::Traceflow> = listed.iter().map(|t| (t.uid.as_str(), t)).collect();
    for a in want {
        match index.get(a.uid.as_str()) {
            None => failures.push(format!("accepted trace {} of {} lost", a.uid, a.cluster)),
            Some(t) if !is_terminal(t) => {
                failures.push(format!("{} {} still {}", t.uid, t.name, phase(t)))
            }
            Some(t) if phase(t) == "Failed" && reason(t).is_empty() => {
                failures.push(format!("{} {} Failed without a reason", t.uid, t.name))
            }
            Some(_) => {}
        }
    }
    failures
}

/// Outcomes of `want` by phase and reason, for the printed figures.
fn outcomes(listed: &[pb::Traceflow], want: &[Accepted]) -> String {
    let index: HashMap<&str, &pb::Traceflow> = listed.iter().map(|t| (t.uid.as_str(), t)).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in want {
        let key = match index.get(a.uid.as_str()) {
            Some(t) if phase(t) == "Failed" => format!("Failed: {}", reason(t)),
            Some(t) => phase(t).to_string(),
            None => "lost".into(),
        };
        *counts.entry(key).or_default() += 1;
    }
    format!("{counts:?}")
}

fn find<'a>(listed: &'a [pb::Traceflow], uid: &str) -> Option<&'a pb::Traceflow> {
    listed.iter().find(|t| t.uid == uid)
}

/// A failure, named `what`, for each trace of `want` that is listed but did not succeed.
fn not_succeeded(listed: &[pb::Traceflow], want: &[Accepted], what: &str) -> Vec<String> {
    want.iter()
        .filter_map(|a| find(listed, &a.uid))
        .filter(|t| phase(t) != "Succeeded")
        .map(|t| {
            format!(
                "{what}: {} {} ({}), want Succeeded",
                t.name,
                phase(t),
                reason(t)
            )
        })
        .collect()
}

/// Until a trace of `kind` in `cluster` succeeds (a new one every 100 ms while creation is
/// refused or a trace fails), at most `within`: how long it took from `from`.
async fn probe(
    api: &Api,
    cluster: &str,
    kind: Kind,
    from: Instant,
    within: Duration,
) -> Result<Duration, String> {
    let mut api = api.clone();
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match api.create(cluster, kind.spec(2)).await {
            Ok(t) => match api.watch_done(&t.uid, Duration::from_secs(4)).await {
                Ok(t) if phase(&t) == "Succeeded" => return Ok(from.elapsed()),
                Ok(t) => last = format!("{}: {}", phase(&t), reason(&t)),
                Err(e) => last = e,
            },
            Err(s) => last = format!("create: {:?}: {}", s.code(), s.message()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no {} -> {} trace in {cluster} succeeded within {within:?}; last: {last}",
        kind.src, kind.dst
    ))
}

/// The pid of the lab's live process `name` (`manager`, `adapter/c1`, `agent/c1/n2`,
/// `ovs-vswitchd/c1/n2`), from the lab state.
fn pid_of(lab: &Lab, name: &str) -> Result<i32, String> {
    let paths = traceflow_lab::lab::Paths::new(&lab.dir).map_err(|e| e.to_string())?;
    let st = traceflow_lab::lab::LabState::load(&paths)
        .map_err(|e| e.to_string())?
        .ok_or("no lab state")?;
    st.processes
        .iter()
        .find(|p| p.name == name && p.alive())
        .map(|p| p.pid)
        .ok_or_else(|| format!("no live process {name} in the lab"))
}

/// SIGKILL, and wait until it is gone; returns when it was sent (monotonic, and wall-clock
/// microseconds to compare with trace end times).
async fn sigkill(lab: &Lab, name: &str) -> Result<(Instant, i64), String> {
    let pid = pid_of(lab, name)?;
    let at = Instant::now();
    let at_micros = now_micros();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("kill -9 {name} ({pid}): {e}"))?;
    while pid_of(lab, name).is_ok() {
        if at.elapsed() > Duration::from_secs(5) {
            return Err(format!("{name} ({pid}) survived SIGKILL"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((at, at_micros))
}

/// How long after `since` (wall-clock micros) the last trace of `want` ended, by the end
/// times the product recorded.
fn last_end(listed: &[pb::Traceflow], want: &[Accepted], since: i64) -> Duration {
    let uids: HashSet<&str> = want.iter().map(|a| a.uid.as_str()).collect();
    let last = listed
        .iter()
        .filter(|t| uids.contains(t.uid.as_str()))
        .filter_map(|t| t.status.as_ref().map(|s| s.end_time_micros))
        .max()
        .unwrap_or(since);
    Duration::from_micros(u64::try_from(last - since).unwrap_or(0))
}

/// `traceflow-lab restart NAME` (with the lab's environment, as `up` had).
fn restart(lab: &Lab, name: &str) -> Result<(), String> {
    let out = tokio::task::block_in_place(|| lab.run(&["restart", name]));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "traceflow-lab restart {name}: {}",
            common::text(&out)
        ))
    }
}

fn agents_of(lab: &Lab, cluster: &str) -> Result<Vec<i32>, String> {
    nodes_of(cluster)
        .iter()
        .map(|n| pid_of(lab, &format!("agent/{cluster}/{n}")))
        .collect()
}

/// Checks the accepted batch is in flight: none ended yet.
async fn assert_in_flight(api: &Api, batch: &[Accepted], since: i64) -> Result<(), String> {
    let mut api = api.clone();
    let clusters: HashSet<&str> = batch.iter().map(|a| a.cluster.as_str()).collect();
    let uids: HashSet<&str> = batch.iter().map(|a| a.uid.as_str()).collect();
    let mut ended = 0;
    for c in clusters {
        ended += list_since(&mut api, c, since)
            .await?
            .iter()
            .filter(|t| uids.contains(t.uid.as_str()) && is_terminal(t))
            .count();
    }
    if ended == 0 {
        Ok(())
    } else {
        Err(format!(
            "{ended} of the paused batch's {} traces ended before the fault",
            batch.len()
        ))
    }
}

/// a. The manager is SIGKILLed with a paused batch in flight and the load running, then
/// restarted: every accepted trace ends (the ones in flight "manager restarted"), both adapters
/// reconnect and a new trace succeeds in each cluster within [`RECONNECT_BOUND`].
async fn manager_killed(lab: &Lab, api: &Api) -> Result<String, String> {
    let since = now_micros();
    // Live-traffic traces hold c1's whole DSCP tag space across the kill; after the restart
    // the manager has the adapter cancel them, so a new live trace gets a tag at once.
    let mut live = Vec::new();
    for _ in 0..LIVE_TAGS {
        live.push(live_trace(api, 60).await?);
    }
    let load = Load::start(api, &["c1", "c2"]);
    let mut agents = agents_of(lab, "c1")?;
    agents.extend(agents_of(lab, "c2")?);
    let paused = Paused::new(&agents)?;
    let mut inflight = batch(api, "c1", 25, BATCH_TIMEOUT).await?;
    inflight.extend(batch(api, "c2", 25, BATCH_TIMEOUT).await?);
    inflight.extend(live.iter().cloned());
    assert_in_flight(api, &inflight, since).await?;
    let (killed, killed_micros) = sigkill(lab, "manager").await?;
    drop(paused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarting = Instant::now();
    restart(lab, "manager")?;
    let restarted = restarting.elapsed();
    let c1 = probe(api, "c1", KINDS[2], restarting, Duration::from_secs(15)).await?;
    let c2 = probe(api, "c2", KINDS[2], restarting, Duration::from_secs(15)).await?;
    // A tag is free: the new live trace runs to its (short) timeout instead of being refused.
    let fresh = live_trace(api, 2).await?;
    let fresh = api
        .clone()
        .watch_done(&fresh.uid, Duration::from_secs(10))
        .await?;
    let (loaded, refused) = load.stop().await;
    let mut all = inflight.clone();
    all.extend(loaded.iter().cloned());
    let (_, listed) = wait_ended(api, &all, since, killed, Duration::from_secs(20)).await?;
    let ended = last_end(&listed, &inflight, killed_micros);
    let mut failures = check_ended(&listed, &all);
    for a in &inflight {
        if let Some(t) = find(&listed, &a.uid)
            && !(phase(t) == "Failed" && reason(t) == "manager restarted")
        {
            failures.push(format!(
                "in flight at the kill: {} {} {} ({}), want Failed: manager restarted",
                a.uid,
                t.name,
                phase(t),
                reason(t)
            ));
        }
    }
    if reason(&fresh) != "Traceflow timeout" {
        failures.push(format!(
            "a live trace after the restart: {} ({}), want Failed: Traceflow timeout (its \
             Nodes armed, no traffic); the live traces of before the kill still hold the tags?",
            phase(&fresh),
            reason(&fresh)
        ));
    }
    for (what, took) in [("c1", c1), ("c2", c2)] {
        if took > RECONNECT_BOUND {
            failures.push(format!(
                "adapter of {what} back {took:?} after the manager's restart, want < {RECONNECT_BOUND:?}"
            ));
        }
    }
    let figures = format!(
        "a. manager SIGKILLed with {} traces in flight ({LIVE_TAGS} of them live-traffic) and \
         {} created under load ({:?} refused while down): restarted in {restarted:.2?}; a new trace succeeded in c1 \
         {c1:.2?} and in c2 {c2:.2?} after the restart began; the last in flight ended {ended:.2?} after \
         the kill; outcomes in flight {}, under load {}",
        inflight.len(),
        loaded.len(),
        refused,
        outcomes(&listed, &inflight),
        outcomes(&listed, &loaded)
    );
    verdict(figures, failures)
}

/// b. c1's adapter is SIGKILLed with a paused batch of c1 in flight, and restarted: the manager
/// fails what it no longer runs naming c1 at once; c2 goes on; c1 works again within
/// [`RECONNECT_BOUND`].
async fn adapter_killed(lab: &Lab, api: &Api) -> Result<String, String> {
    let since = now_micros();
    let load = Load::start(api, &["c1", "c2"]);
    let paused = Paused::new(&agents_of(lab, "c1")?)?;
    let inflight = batch(api, "c1", 40, BATCH_TIMEOUT).await?;
    assert_in_flight(api, &inflight, since).await?;
    let c2_batch = batch(api, "c2", 10, BATCH_TIMEOUT).await?;
    let (killed, killed_micros) = sigkill(lab, "adapter/c1").await?;
    drop(paused);
    let restarting = Instant::now();
    restart(lab, "adapter/c1")?;
    let (failed_in, listed) =
        wait_ended(api, &inflight, since, restarting, Duration::from_secs(15)).await?;
    let back = probe(api, "c1", KINDS[2], restarting, Duration::from_secs(15)).await?;
    let (loaded, refused) = load.stop().await;
    let mut all = inflight.clone();
    all.extend(c2_batch.iter().cloned());
    all.extend(loaded.iter().cloned());
    let (_, listed_all) = wait_ended(api, &all, since, killed, Duration::from_secs(20)).await?;
    let ended = last_end(&listed_all, &inflight, killed_micros);
    let mut failures = check_ended(&listed_all, &all);
    for a in &inflight {
        if let Some(t) = find(&listed, &a.uid)
            && !(phase(t) == "Failed" && reason(t).contains("cluster c1"))
        {
            failures.push(format!(
                "in flight at c1's adapter kill: {} {} ({}), want Failed naming cluster c1",
                t.name,
                phase(t),
                reason(t)
            ));
        }
    }
    failures.extend(not_succeeded(
        &listed_all,
        &c2_batch,
        "c2 trace during c1's adapter kill",
    ));
    if back > RECONNECT_BOUND {
        failures.push(format!(
            "c1 back {back:?} after its adapter's restart, want < {RECONNECT_BOUND:?}"
        ));
    }
    let figures = format!(
        "b. adapter of c1 SIGKILLed with {} c1 traces in flight, {} created under load ({:?} \
         refused): the in-flight ones failed {failed_in:.2?} after the restart began ({}); a \
         new c1 trace succeeded {back:.2?} after; {} c2 traces meanwhile all Succeeded; the \
         last in flight ended {ended:.2?} after the kill",
        inflight.len(),
        loaded.len(),
        refused,
        outcomes(&listed, &inflight),
        c2_batch.len()
    );
    verdict(figures, failures)
}

/// A live-traffic trace a1 → b1 in c1 (n1 tags, n2 receives), waiting for traffic that never
/// comes (no injected trace of the load starts at a1 either).
async fn live_trace(api: &Api, timeout: i32) -> Result<Accepted, String> {
    let mut api = api.clone();
    let mut s = spec("default/a1", to_pod("default/b1"), None);
    s.timeout = timeout;
    s.live_traffic = true;
    let t = api
        .create("c1", s)
        .await
        .map_err(|s| format!("live trace: {s:?}"))?;
    Ok(Accepted {
        uid: t.uid,
        cluster: "c1".into(),
        kind: 2, // like a0 -> b0: needs n1 and n2
    })
}

/// c. The agent of n2 is SIGKILLed with a paused batch (and a live trace) in flight: what
/// needs n2 fails within [`AGENT_LOSS_BOUND`] naming n2; what needs only n1 succeeds; the
/// restarted agent carries traces again within [`RECONNECT_BOUND`].
async fn agent_killed(lab: &Lab, api: &Api) -> Result<String, String> {
    let since = now_micros();
    let live = live_trace(api, 30).await?;
    // Armed on both Nodes before the agents pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = Load::start(api, &["c1"]);
    let paused = Paused::new(&agents_of(lab, "c1")?)?;
    let mut inflight = batch(api, "c1", 50, BATCH_TIMEOUT).await?;
    inflight.push(live.clone());
    assert_in_flight(api, &inflight, since).await?;
    let (killed, killed_micros) = sigkill(lab, "agent/c1/n2").await?;
    drop(paused);
    let needs_n2: Vec<Accepted> = inflight
        .iter()
        .filter(|a| KINDS[a.kind].needs("c1", "n2"))
        .cloned()
        .collect();
    let (failed_in, listed) =
        wait_ended(api, &needs_n2, since, killed, Duration::from_secs(15)).await?;
    let mut failures = Vec::new();
    for a in &needs_n2 {
        let Some(t) = find(&listed, &a.uid) else {
            continue;
        };
        // Started at the adapter before the kill: "agent disconnected"; accepted by the
        // manager before the kill but reaching the adapter after it: "agent is not connected".
        let named = [
            "Node: n2, error: agent disconnected",
            "Node: n2, error: agent is not connected",
        ];
        if !(phase(t) == "Failed" && named.contains(&reason(t))) {
            failures.push(format!(
                "needing n2: {} {} ({}), want Failed: Node: n2, error: agent disconnected (or \
                 is not connected)",
                t.name,
                phase(t),
                reason(t)
            ));
        }
    }
    // The bound holds on the end times the product recorded; when the test's own polling
    // saw them all ended (`failed_in`, which grows with the load beside) is only a figure.
    let product_took = last_end(&listed, &needs_n2, killed_micros);
    if product_took > AGENT_LOSS_BOUND {
        failures.push(format!(
            "traces needing n2 all ended {product_took:?} after its agent's kill by their end \
             times (seen {failed_in:?} after), want < {AGENT_LOSS_BOUND:?}"
        ));
    }
    let restarting = Instant::now();
    restart(lab, "agent/c1/n2")?;
    let back = probe(api, "c1", KINDS[3], restarting, Duration::from_secs(15)).await?;
    let (loaded, refused) = load.stop().await;
    let mut all = inflight.clone();
    all.extend(loaded.iter().cloned());
    let (_, listed_all) = wait_ended(api, &all, since, killed, Duration::from_secs(20)).await?;
    let ended = last_end(&listed_all, &inflight, killed_micros);
    failures.extend(check_ended(&listed_all, &all));
    let n1_only: Vec<Accepted> = inflight
        .iter()
        .filter(|a| !KINDS[a.kind].needs("c1", "n2"))
        .cloned()
        .collect();
    failures.extend(not_succeeded(&listed_all, &n1_only, "n1-only trace"));
    if back > RECONNECT_BOUND {
        failures.push(format!(
            "n2 carried a trace {back:?} after its agent's restart, want < {RECONNECT_BOUND:?}"
        ));
    }
    let figures = format!(
        "c. agent of c1/n2 SIGKILLed with {} traces in flight ({} needing n2, one of them \
         live-traffic), {} created under load ({:?} refused): those needing n2 ended \
         {failed_in:.2?} after the kill (by end time {product_took:.2?}; {}); a new n2 -> n1 \
         trace succeeded {back:.2?} after the restart began; the last in flight ended {ended:.2?} after \
         the kill",
        inflight.len(),
        needs_n2.len(),
        loaded.len(),
        refused,
        outcomes(&listed, &needs_n2)
    );
    verdict(figures, failures)
}

/// d. ovs-vswitchd of n2 is SIGKILLed under load, restarted after a second: every trace ends
/// (those that lost their packet by their timeout), and the agent reprograms the new switch by
/// itself: both directions across n2 succeed again.
async fn vswitchd_killed(lab: &Lab, api: &Api) -> Result<String, String> {
    let since = now_micros();
    let load = Load::start(api, &["c1"]);
    let paused = Paused::new(&agents_of(lab, "c1")?)?;
    let inflight = batch(api, "c1", 25, SHORT_BATCH_TIMEOUT).await?;
    assert_in_flight(api, &inflight, since).await?;
    let (killed, killed_micros) = sigkill(lab, "ovs-vswitchd/c1/n2").await?;
    drop(paused);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarting = Instant::now();
    restart(lab, "ovs-vswitchd/c1/n2")?;
    let forward = probe(api, "c1", KINDS[2], restarting, Duration::from_secs(15)).await?;
    let back = probe(api, "c1", KINDS[3], restarting, Duration::from_secs(15)).await?;
    let (loaded, refused) = load.stop().await;
    let mut all = inflight.clone();
    all.extend(loaded.iter().cloned());
    let within = Duration::from_secs(u64::from(SHORT_BATCH_TIMEOUT.unsigned_abs()) + 10);
    let (_, listed) = wait_ended(api, &all, since, killed, within).await?;
    let ended = last_end(&listed, &all, killed_micros);
    let mut failures = check_ended(&listed, &all);
    let recovered = forward.max(back);
    if recovered > RECONNECT_BOUND {
        failures.push(format!(
            "traces across n2 succeeded again {recovered:?} after ovs-vswitchd's restart, \
             want < {RECONNECT_BOUND:?}"
        ));
    }
    let figures = format!(
        "d. ovs-vswitchd of c1/n2 SIGKILLed with {} traces in flight, {} created under load \
         ({:?} refused), restarted 1 s later: n1 -> n2 succeeded {forward:.2?} and n2 -> n1 \
         {back:.2?} after the restart began; the last trace ended {ended:.2?} after the kill; outcomes {}",
        inflight.len(),
        loaded.len(),
        refused,
        outcomes(&listed, &all)
    );
    verdict(figures, failures)
}

/// `ip link set <n2's underlay veth> <state>` in c1's underlay namespace.
fn underlay_link(lab: &Lab, state: &str) -> Result<(), String> {
    let netns = traceflow_lab::node::names::underlay_netns(&lab.prefix, "c1");
    let veth = traceflow_lab::node::names::underlay_veth("n2");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns, "ip", "link", "set", &veth, state])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip link set {veth} {state} in {netns}: {}",
            common::text(&out)
        ))
    }
}

/// e. n2's underlay is cut under load for 1.5 s: every inter-Node trace of the cut ends
/// Failed with a timeout reason (none hangs), same-Node ones go on; once the link is back an
/// inter-Node trace succeeds.
async fn underlay_cut(lab: &Lab, api: &Api) -> Result<String, String> {
    let since = now_micros();
    let load = Load::start(api, &["c1"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    underlay_link(lab, "down")?;
    // Down from here: read after the command returned.
    let cut_micros = now_micros();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Traces created from here on may cross a healed link.
    let healing_micros = now_micros();
    let healing = Instant::now();
    let relinked = underlay_link(lab, "up");
    let (loaded, refused) = load.stop().await;
    relinked?;
    let back = probe(api, "c1", KINDS[2], healing, Duration::from_secs(15)).await?;
    let within = Duration::from_secs(u64::from(LOAD_TIMEOUT.unsigned_abs()) + 10);
    let (_, listed) = wait_ended(api, &loaded, since, cut, within).await?;
    let ended = last_end(&listed, &loaded, cut_micros);
    let mut failures = check_ended(&listed, &loaded);
    let mut cut_off = Vec::new();
    for a in &loaded {
        let Some(t) = find(&listed, &a.uid) else {
            continue;
        };
        // Started at the adapter (its packet injected right after) well inside the cut: its
        // packet was lost. The start, not the creation: between the two the manager stores
        // the trace and sends it on, which takes longer under load. The margin at the heal
        // covers the adapter → agent → OVS path of the inject.
        let started = t.status.as_ref().map_or(0, |s| s.start_time_micros);
        let during = started > cut_micros + 50_000 && started < healing_micros - 200_000;
        if during && KINDS[a.kind].inter_node() {
            cut_off.push(a.clone());
            if !(phase(t) == "Failed" && reason(t).starts_with("Traceflow timeout")) {
                failures.push(format!(
                    "inter-Node trace {} across the cut: {} ({}), want Failed: Traceflow timeout",
                    t.name,
                    phase(t),
                    reason(t)
                ));
            }
        }
        if !KINDS[a.kind].inter_node() && phase(t) != "Succeeded" {
            failures.push(format!(
                "same-Node trace {} during the cut: {} ({}), want Succeeded",
                t.name,
                phase(t),
                reason(t)
            ));
        }
    }
    if cut_off.is_empty() {
        failures.push(
            "no inter-Node trace was injected during the cut: the load proved nothing".into(),
        );
    }
    if back > RECONNECT_BOUND {
        failures.push(format!(
            "an inter-Node trace succeeded {back:?} after the link came back, want < {RECONNECT_BOUND:?}"
        ));
    }
    let figures = format!(
        "e. underlay of c1/n2 cut for 1.5 s under load: {} traces ({:?} refused), {} inter-Node \
         ones injected during the cut; the last trace ended {ended:.2?} after the cut; an inter-Node trace \
         succeeded {back:.2?} after the link came back; outcomes {}",
        loaded.len(),
        refused,
        cut_off.len(),
        outcomes(&listed, &loaded)
    );
    verdict(figures, failures)
}

/// f. The agent of c2's m2 is frozen (SIGSTOP) with a batch of c2 in flight: its connection
/// stays up and answers nothing, as a hung agent's or a half-open link's would. The adapter's
/// HTTP/2 keepalive must notice within its interval and timeout: the traces needing m2 fail
/// naming it (not by their own timeout, which is longer), those needing only m1 succeed, and
/// once thawed the agent reconnects by itself and m2 carries a trace within
/// [`RECONNECT_BOUND`].
async fn agent_frozen(agent: i32, api: Api) -> Result<String, String> {
    let api = &api;
    let keepalive =
        traceflow_core::limits::KEEPALIVE_INTERVAL + traceflow_core::limits::KEEPALIVE_TIMEOUT;
    let bound = keepalive + FROZEN_SLACK;
    // Longer than the bound and the wait below: a trace failed by its timeout shows as such.
    let timeout = i32::try_from(bound.as_secs() * 2).unwrap_or(i32::MAX);
    let since = now_micros();
    let frozen = Paused::new(&[agent])?;
    let froze = Instant::now();
    let inflight = batch(api, "c2", 5, timeout).await?;
    let (needs_m2, m1_only): (Vec<Accepted>, Vec<Accepted>) = inflight
        .iter()
        .cloned()
        .partition(|a| KINDS[a.kind].needs("c2", "m2"));
    let waited = wait_ended(api, &needs_m2, since, froze, bound + Duration::from_secs(5)).await;
    let thawed = Instant::now();
    drop(frozen);
    let (noticed_in, listed) = waited?;
    let mut failures = Vec::new();
    for a in &needs_m2 {
        let Some(t) = find(&listed, &a.uid) else {
            continue;
        };
        if !(phase(t) == "Failed" && reason(t) == "Node: m2, error: agent disconnected") {
            failures.push(format!(
                "needing the frozen m2: {} {} ({}), want Failed: Node: m2, error: agent \
                 disconnected",
                t.name,
                phase(t),
                reason(t)
            ));
        }
    }
    if noticed_in > bound {
        failures.push(format!(
            "traces needing the frozen m2 ended {noticed_in:?} after it froze, want < {bound:?} \
             (keepalive {keepalive:?} + {FROZEN_SLACK:?})"
        ));
    }
    let back = probe(api, "c2", KINDS[3], thawed, Duration::from_secs(15)).await?;
    let (_, listed_all) = wait_ended(api, &inflight, since, froze, Duration::from_secs(10)).await?;
    failures.extend(check_ended(&listed_all, &inflight));
    failures.extend(not_succeeded(
        &listed_all,
        &m1_only,
        "m1-only trace while m2's agent was frozen",
    ));
    if back > RECONNECT_BOUND {
        failures.push(format!(
            "m2 carried a trace {back:?} after its agent thawed, want < {RECONNECT_BOUND:?}"
        ));
    }
    let figures = format!(
        "f. agent of c2/m2 frozen with {} traces in flight ({} needing m2): those ended \
         {noticed_in:.2?} after it froze ({}; keepalive {keepalive:?}); thawed, a new m2 -> m1 \
         trace succeeded {back:.2?} after",
        inflight.len(),
        needs_m2.len(),
        outcomes(&listed, &needs_m2)
    );
    verdict(figures, failures)
}

/// Restarts whatever part a fault killed that is still down, and relinks n2's underlay.
fn heal(lab: &Lab) -> Result<(), String> {
    for name in ["manager", "adapter/c1", "agent/c1/n2", "ovs-vswitchd/c1/n2"] {
        if pid_of(lab, name).is_err() {
            restart(lab, name)?;
        }
    }
    underlay_link(lab, "up")
}

type Fault = for<'a> fn(
    &'a Lab,
    &'a Api,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>,
>;

/// Runs `faults` one after another; what failed, each named.
async fn in_turn(lab: &Lab, api: &Api, faults: &[(&str, Fault)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, fault) in faults {
        let started = Instant::now();
        if let Err(e) = fault(lab, api).await {
            failures.push(format!("{what} ({:.1?}): {e}", started.elapsed()));
            // A fault that failed half-way may have left its part down: bring it back so
            // the next fault tests what it says.
            if let Err(e) = heal(lab) {
                failures.push(format!("after {what}: {e}"));
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    failures
}

fn verdict(figures: String, failures: Vec<String>) -> Result<String, String> {
    println!("{figures}");
    if failures.is_empty() {
        Ok(figures)
    } else {
        let n = failures.len();
        let mut shown: Vec<String> = failures.into_iter().take(10).collect();
        if n > shown.len() {
            shown.push(format!("... {} more", n - shown.len()));
        }
        Err(format!("{figures}\n{}", shown.join("\n")))
    }
}

#[test]
fn every_trace_ends_and_every_part_comes_back_after_kills_and_a_cut_under_load() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("flt");
    let cfg = up_with_config(&mut lab, &topology("faults.yaml"));
    // `restart` refuses a process that still runs, and one the lab does not have.
    for (name, want) in [
        ("manager", "is still running"),
        ("agent/c1/n9", "no process \"agent/c1/n9\" in the lab"),
    ] {
        let out = lab.run(&["restart", name]);
        let text = common::text(&out);
        assert!(
            !out.status.success() && text.contains(want),
            "restart {name}: want a failure saying {want:?}, got: {text}"
        );
    }
    let rt = runtime();
    let result = rt.block_on(async {
        let mut api = Api::connect(&cfg).await?;
        for c in ["c1", "c2"] {
            api.wait_pods(c, 4).await?;
        }
        let mut failures = Vec::new();
        let faults: [(&str, Fault); 5] = [
            ("manager", |l, a| Box::pin(manager_killed(l, a))),
            ("adapter", |l, a| Box::pin(adapter_killed(l, a))),
            ("agent", |l, a| Box::pin(agent_killed(l, a))),
            ("ovs-vswitchd", |l, a| Box::pin(vswitchd_killed(l, a))),
            ("underlay", |l, a| Box::pin(underlay_cut(l, a))),
        ];
        let (before, beside) = faults.split_at(2);
        failures.extend(in_turn(&lab, &api, before).await);
        // c. to e. touch only c1 and f. only c2 (a frozen agent takes 15 s to notice): at
        // once, f. in a task of its own so the lab commands c. to e. block on never delay it.
        let frozen = tokio::spawn(agent_frozen(pid_of(&lab, "agent/c2/m2")?, api.clone()));
        failures.extend(in_turn(&lab, &api, beside).await);
        match frozen.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failures.push(format!("frozen agent: {e}")),
            Err(e) => failures.push(format!("frozen agent: the task panicked: {e}")),
        }
        Ok::<_, String>(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
