//! `TraceflowService`: the tonic edge of [`crate::traces::workflow`]. Each method takes the
//! caller the access table authenticated, converts the request (the spec through
//! [`TraceSpec::named`], once), calls the workflow and maps its error.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use traceflow_core::TraceSpec;
use traceflow_proto::v1 as pb;
use tracing::Instrument;

use super::{
    Ctx,
    access::caller,
    error::{ApiError, ApiResult},
    page_size,
};
use crate::store::TraceFilter;

/// The TraceflowService implementation.
#[derive(Clone, Debug)]
pub struct TraceflowSvc {
    pub ctx: Ctx,
}

/// The spec of a create request, validated: `spec` is required.
fn spec_of(name: &str, spec: Option<pb::TraceflowSpec>) -> ApiResult<TraceSpec> {
    let spec = spec.ok_or_else(|| traceflow_core::Invalid::new("spec", "spec is required"))?;
    Ok(TraceSpec::named(name, spec)?)
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

/// A call that starts a trace: run in the trace's root span (see [`call_span`]) with the
/// authenticated caller.
async fn traced<T>(
    name: &'static str,
    request: Request<T>,
    run: impl AsyncFnOnce(crate::auth::Principal, T) -> ApiResult<pb::Traceflow>,
) -> Result<Response<pb::Traceflow>, Status> {
    let span = call_span(name, request.metadata());
    async move {
        let who = caller(&request)?;
        Ok(Response::new(run(who, request.into_inner()).await?))
    }
    .instrument(span)
    .await
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Traceflow, Status>> + Send>>;

#[tonic::async_trait]
impl pb::traceflow_service_server::TraceflowService for TraceflowSvc {
    type WatchTraceflowStream = WatchStream;

    async fn create_traceflow(
        &self,
        request: Request<pb::CreateTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        traced("create_traceflow", request, async |who, req| {
            let pb::CreateTraceflowRequest {
                cluster,
                spec,
                name,
            } = req;
            let spec = spec_of(&name, spec)?;
            Ok(self.ctx.traces.create(&who, cluster, name, spec).await?)
        })
        .await
    }

    async fn get_traceflow(
        &self,
        request: Request<pb::GetTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        caller(&request)?;
        let pb::GetTraceflowRequest { uid, name } = request.into_inner();
        let t = self.ctx.traces.get(&uid, &name).map_err(ApiError::from)?;
        Ok(Response::new(t))
    }

    async fn list_traceflows(
        &self,
        request: Request<pb::ListTraceflowsRequest>,
    ) -> Result<Response<pb::ListTraceflowsResponse>, Status> {
        caller(&request)?;
        let pb::ListTraceflowsRequest {
            cluster,
            phase,
            source,
            destination,
            created_after_micros,
            created_before_micros,
            page_size: size,
            page_token,
        } = request.into_inner();
        if size < 0 {
            return Err(ApiError::Invalid(traceflow_core::Invalid::new(
                "page_size",
                "must not be negative",
            ))
            .into());
        }
        let filter = TraceFilter {
            cluster,
            phase,
            source,
            destination,
            created_after_micros,
            created_before_micros,
        };
        let page = self
            .ctx
            .traces
            .list(&filter, page_size(size), &page_token)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListTraceflowsResponse {
            traceflows: page.traces,
            next_page_token: page.next_page_token,
        }))
    }

    async fn watch_traceflow(
        &self,
        request: Request<pb::WatchTraceflowRequest>,
    ) -> Result<Response<Self::WatchTraceflowStream>, Status> {
        let who = caller(&request)?;
        let permit = self.ctx.guard.watch_permit(who.name())?;
        let pb::WatchTraceflowRequest { uid, name } = request.into_inner();
        let rx = self.ctx.traces.watch(&uid, &name).map_err(ApiError::from)?;
        // The permit lives as long as the stream: dropped when it ends or the client leaves.
        let stream = ReceiverStream::new(rx).map(move |r| {
            let _held = &permit;
            r.map_err(|e| Status::from(ApiError::from(e)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn delete_traceflow(
        &self,
        request: Request<pb::DeleteTraceflowRequest>,
    ) -> Result<Response<pb::DeleteTraceflowResponse>, Status> {
        caller(&request)?;
        let pb::DeleteTraceflowRequest { uid, name } = request.into_inner();
        self.ctx
            .traces
            .delete(&uid, &name)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteTraceflowResponse {}))
    }

    async fn retrace(
        &self,
        request: Request<pb::RetraceRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        traced("retrace", request, async |who, req| {
            let pb::RetraceRequest { uid, name } = req;
            Ok(self.ctx.traces.retrace(&who, &uid, &name).await?)
        })
        .await
    }
}
