//! `TraceflowService`: traces across every registered cluster.
//!
//! Roles: view for Get/List/Watch, edit for Create/Delete/Retrace.
//! Create stores the trace Pending (durably) and sends `StartTrace` down the cluster's stream;
//! with no live stream it stores and returns the trace Failed with reason
//! `cluster <name> is not connected` at once.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use traceflow_proto::v1 as pb;
use tracing::Instrument;

use super::{
    Ctx,
    error::{ApiError, ApiResult},
    page_size,
};
use crate::{
    auth::{Principal, Role},
    store::{TraceFilter, now_micros},
    traces::{
        TraceEvent, fail, is_terminal, phase,
        validate::{Invalid, check_source_pod, generate_name, validate_spec},
    },
};

/// Grace beyond a trace's own timeout before the manager fails it itself.
const TIMEOUT_GRACE: Duration = Duration::from_secs(15);

/// The TraceflowService implementation.
#[derive(Clone, Debug)]
pub struct TraceflowSvc {
    pub ctx: Ctx,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

impl TraceflowSvc {
    /// The uid named by exactly one of `uid` or `name`.
    fn resolve(&self, uid: &str, name: &str) -> ApiResult<String> {
        match (uid.is_empty(), name.is_empty()) {
            (true, true) => Err(invalid("uid", "set uid or name")),
            (false, false) => Err(invalid("uid", "set only one of uid and name")),
            (false, true) => Ok(uid.to_string()),
            (true, false) => self
                .ctx
                .store
                .trace_uid_by_name(name)?
                .ok_or_else(|| ApiError::NotFound(format!("no trace named {name:?}"))),
        }
    }

    fn load(&self, uid: &str, name: &str) -> ApiResult<pb::Traceflow> {
        let uid = self.resolve(uid, name)?;
        self.ctx
            .store
            .get_trace(&uid)?
            .ok_or_else(|| ApiError::NotFound(format!("no trace with uid {uid:?}")))
    }

    async fn create(
        &self,
        who: Principal,
        req: pb::CreateTraceflowRequest,
    ) -> ApiResult<pb::Traceflow> {
        let pb::CreateTraceflowRequest {
            cluster,
            spec,
            name,
        } = req;
        if cluster.is_empty() {
            return Err(invalid("cluster", "is required; name a registered cluster"));
        }
        let spec = validate_spec(if name.is_empty() { "" } else { &name }, spec)?;
        if self.ctx.store.cluster(&cluster)?.is_none() {
            return Err(invalid(
                "cluster",
                format!("cluster {cluster:?} is not registered"),
            ));
        }
        let src = spec.source.clone().unwrap_or_default();
        let checked = self.ctx.fleet.with_inventory(&cluster, |inv| {
            inv.synced
                .then(|| check_source_pod(&spec, inv.pod(&src.namespace, &src.pod)))
        });
        if let Some(result) = checked {
            result?;
        }
        let name = if name.is_empty() {
            generate_name(&spec)
        } else {
            if self.ctx.store.trace_uid_by_name(&name)?.is_some() {
                return Err(ApiError::AlreadyExists(format!(
                    "a trace named {name:?} already exists; pick another name or leave it empty"
                )));
            }
            name
        };
        let t = pb::Traceflow {
            uid: uuid::Uuid::new_v4().to_string(),
            name,
            cluster,
            spec: Some(spec),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Pending as i32,
                ..Default::default()
            }),
            creation_time_micros: now_micros(),
            created_by: who.name().to_string(),
            retrace_of: String::new(),
        };
        self.start(t).await
    }

    /// Stores `t` and hands it to its cluster, or fails it when the cluster is not connected.
    async fn start(&self, mut t: pb::Traceflow) -> ApiResult<pb::Traceflow> {
        let tx = match self.ctx.fleet.sender(&t.cluster) {
            Ok(tx) => tx,
            Err(why) => {
                let reason = why.reason(&t.cluster);
                fail(&mut t, &reason, now_micros());
                tracing::info!(uid = %t.uid, cluster = %t.cluster, %reason, "trace failed at once");
                return Ok(self.ctx.hub.save(t).await?);
            }
        };
        let t = self.ctx.hub.save(t).await?;
        let span = tracing::Span::current();
        span.record("uid", t.uid.as_str());
        span.record("cluster", t.cluster.as_str());
        let msg = pb::ManagerMessage {
            kind: Some(pb::manager_message::Kind::StartTrace(pb::StartTrace {
                trace: Some(t.clone()),
                // The adapter's spans for this trace become children of this call's span.
                trace_context: traceflow_telemetry::context_map(&span),
            })),
        };
        let sent = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(msg))).await;
        if !matches!(sent, Ok(Ok(()))) {
            let reason = format!("cluster {} is not connected", t.cluster);
            self.ctx.hub.fail_if_inflight(&t.uid, &reason).await;
            return self.load(&t.uid, "");
        }
        let timeout = t.spec.as_ref().map(|s| s.timeout).unwrap_or(20);
        self.ctx
            .hub
            .arm_timeout(t.uid.clone(), timeout, TIMEOUT_GRACE);
        tracing::info!(uid = %t.uid, name = %t.name, cluster = %t.cluster, "trace started");
        Ok(t)
    }

    fn list(&self, req: pb::ListTraceflowsRequest) -> ApiResult<pb::ListTraceflowsResponse> {
        if req.phase != 0 && pb::TraceflowPhase::try_from(req.phase).is_err() {
            return Err(invalid(
                "phase",
                format!(
                    "unknown phase {}; use Pending, Running, Succeeded or Failed",
                    req.phase
                ),
            ));
        }
        if req.page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        if req.created_after_micros > 0
            && req.created_before_micros > 0
            && req.created_after_micros >= req.created_before_micros
        {
            return Err(invalid(
                "created_after_micros",
                "must be before created_before_micros",
            ));
        }
        let filter = TraceFilter {
            cluster: req.cluster,
            phase: req.phase,
            source: req.source,
            destination: req.destination,
            created_after_micros: req.created_after_micros,
            created_before_micros: req.created_before_micros,
        };
        let page = self
            .ctx
            .store
            .list_traces(&filter, page_size(req.page_size), &req.page_token)?
            .ok_or_else(|| invalid("page_token", "is not a token returned by ListTraceflows"))?;
        Ok(pb::ListTraceflowsResponse {
            traceflows: page.traces,
            next_page_token: page.next_page_token,
        })
    }

    fn watch(&self, uid: String) -> ApiResult<ReceiverStream<Result<pb::Traceflow, Status>>> {
        // Subscribe before reading, so no change between the read and the subscription is lost.
        let mut events = self.ctx.hub.subscribe();
        let current = self.load(&uid, "")?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.ctx.store.clone();
        tokio::spawn(async move {
            let done = is_terminal(phase(&current));
            if tx.send(Ok(current)).await.is_err() || done {
                return;
            }
            loop {
                let next = match events.recv().await {
                    Ok(TraceEvent::Updated(t)) if t.uid == uid => *t,
                    Ok(TraceEvent::Deleted(u)) if u == uid => {
                        let _ = tx
                            .send(Err(Status::not_found(format!("trace {uid} was deleted"))))
                            .await;
                        return;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => match store.get_trace(&uid) {
                        Ok(Some(t)) => t,
                        _ => return,
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let done = is_terminal(phase(&next));
                if tx.send(Ok(next)).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    async fn delete(&self, req: pb::DeleteTraceflowRequest) -> ApiResult<()> {
        let t = self.load(&req.uid, &req.name)?;
        if !is_terminal(phase(&t))
            && let Ok(tx) = self.ctx.fleet.sender(&t.cluster)
        {
            let cancel = pb::ManagerMessage {
                kind: Some(pb::manager_message::Kind::CancelTrace(pb::CancelTrace {
                    uid: t.uid.clone(),
                })),
            };
            let _ = tx.try_send(Ok(cancel));
        }
        self.ctx.hub.delete(&t.uid).await?;
        tracing::info!(uid = %t.uid, "trace deleted");
        Ok(())
    }

    async fn retrace(&self, who: Principal, req: pb::RetraceRequest) -> ApiResult<pb::Traceflow> {
        let old = self.load(&req.uid, &req.name)?;
        if self.ctx.store.cluster(&old.cluster)?.is_none() {
            return Err(ApiError::FailedPrecondition(format!(
                "cluster {:?} of this trace is no longer registered",
                old.cluster
            )));
        }
        let spec = old.spec.clone().unwrap_or_default();
        let t = pb::Traceflow {
            uid: uuid::Uuid::new_v4().to_string(),
            name: generate_name(&spec),
            cluster: old.cluster.clone(),
            spec: Some(spec),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Pending as i32,
                ..Default::default()
            }),
            creation_time_micros: now_micros(),
            created_by: who.name().to_string(),
            retrace_of: old.uid,
        };
        self.start(t).await
    }
}

/// The root span of a trace in this manager: a child of the caller's W3C `traceparent`
/// metadata when it sent one; `uid` and `cluster` are recorded once the trace exists.
fn call_span(name: &'static str, md: &tonic::metadata::MetadataMap) -> tracing::Span {
    let span = match name {
        "retrace" => tracing::info_span!(
            "retrace",
            uid = tracing::field::Empty,
            cluster = tracing::field::Empty
        ),
        _ => tracing::info_span!(
            "create_traceflow",
            uid = tracing::field::Empty,
            cluster = tracing::field::Empty
        ),
    };
    traceflow_telemetry::set_parent_from_metadata(&span, md);
    span
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Traceflow, Status>> + Send>>;

#[tonic::async_trait]
impl pb::traceflow_service_server::TraceflowService for TraceflowSvc {
    type WatchTraceflowStream = WatchStream;

    async fn create_traceflow(
        &self,
        request: Request<pb::CreateTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        let span = call_span("create_traceflow", request.metadata());
        async move {
            let who = self
                .ctx
                .require(&request, Role::Edit, "TraceflowService.CreateTraceflow")?;
            Ok(Response::new(self.create(who, request.into_inner()).await?))
        }
        .instrument(span)
        .await
    }

    async fn get_traceflow(
        &self,
        request: Request<pb::GetTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        self.ctx
            .require(&request, Role::View, "TraceflowService.GetTraceflow")?;
        let r = request.into_inner();
        Ok(Response::new(self.load(&r.uid, &r.name)?))
    }

    async fn list_traceflows(
        &self,
        request: Request<pb::ListTraceflowsRequest>,
    ) -> Result<Response<pb::ListTraceflowsResponse>, Status> {
        self.ctx
            .require(&request, Role::View, "TraceflowService.ListTraceflows")?;
        Ok(Response::new(self.list(request.into_inner())?))
    }

    async fn watch_traceflow(
        &self,
        request: Request<pb::WatchTraceflowRequest>,
    ) -> Result<Response<Self::WatchTraceflowStream>, Status> {
        self.ctx
            .require(&request, Role::View, "TraceflowService.WatchTraceflow")?;
        let r = request.into_inner();
        let uid = self.resolve(&r.uid, &r.name)?;
        Ok(Response::new(Box::pin(self.watch(uid)?)))
    }

    async fn delete_traceflow(
        &self,
        request: Request<pb::DeleteTraceflowRequest>,
    ) -> Result<Response<pb::DeleteTraceflowResponse>, Status> {
        self.ctx
            .require(&request, Role::Edit, "TraceflowService.DeleteTraceflow")?;
        self.delete(request.into_inner()).await?;
        Ok(Response::new(pb::DeleteTraceflowResponse {}))
    }

    async fn retrace(
        &self,
        request: Request<pb::RetraceRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        let span = call_span("retrace", request.metadata());
        async move {
            let who = self
                .ctx
                .require(&request, Role::Edit, "TraceflowService.Retrace")?;
            Ok(Response::new(
                self.retrace(who, request.into_inner()).await?,
            ))
        }
        .instrument(span)
        .await
    }
}
