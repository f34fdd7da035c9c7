//! Plain-HTTP answers on the manager's one TLS port, in front of tonic: the web console's files
//! ([`crate::console`]) and `GET /metrics` ([`crate::telemetry`]).
//!
//! ```text
//!   request ─▶ RouteService ─┬─ Route::matches ─▶ Route::respond (the body is not read)
//!                            └─ anything else ─▶ the inner service (tonic), unchanged
//! ```
//!
//! A route only ever takes GET or HEAD requests that are not gRPC ([`is_plain_get`]), so no
//! API call, gRPC-Web included, can be shadowed by one.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use tonic::codegen::http::{Method, Request, Response, header, request};

/// What a route answers with.
pub type HttpResponse = Response<tonic::body::Body>;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Whether `req` is a GET or HEAD without a gRPC content type: the requests a route may take.
pub fn is_plain_get<B>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && !req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Requests answered in front of tonic.
pub trait Route: Clone + Send + 'static {
    /// Whether `req` is this route's (only ever a request [`is_plain_get`] accepts).
    fn matches<B>(&self, req: &Request<B>) -> bool;

    /// The answer to a request of this route, from its head (method, URI, headers and the
    /// extensions holding the TLS peer certificate).
    fn respond(&self, head: request::Parts) -> BoxFuture<HttpResponse>;
}

/// Answers the requests of route `R` and passes everything else to the inner service.
#[derive(Debug, Clone)]
pub struct RouteLayer<R> {
    route: R,
}

impl<R> RouteLayer<R> {
    pub fn with(route: R) -> Self {
        RouteLayer { route }
    }
}

impl<S, R: Clone> tower::Layer<S> for RouteLayer<R> {
    type Service = RouteService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            route: self.route.clone(),
        }
    }
}

/// See [`RouteLayer`].
#[derive(Debug, Clone)]
pub struct RouteService<S, R> {
    inner: S,
    route: R,
}

impl<S, R, ReqBody, ResBody> tower::Service<Request<ReqBody>> for RouteService<S, R>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    R: Route,
    ResBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.route.matches(&req) {
            let (head, _body) = req.into_parts();
            let answer = self.route.respond(head);
            return Box::pin(async move { Ok(answer.await) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map(|r| r.map(tonic::body::Body::new)) })
    }
}
