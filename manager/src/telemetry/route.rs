//! `GET /metrics` on the manager's one TLS port: the routing hook in front of tonic.
//!
//! Contract (docs/contracts.md "Metrics"): only `GET`/`HEAD /metrics` without a gRPC content
//! type is answered here; the caller must be a user with at least the view role, by client
//! certificate or `authorization: Bearer <token>` (the same check as every RPC). No credentials
//! or a bad token: 401 with `WWW-Authenticate: Bearer`; a cluster certificate: 403.

use bytes::Bytes;
use http_body_util::Full;
use tonic::codegen::http::{HeaderValue, Method, Request, Response, StatusCode, header, request};

use crate::auth::{Authenticator, Role};
use crate::http_route::{BoxFuture, HttpResponse, Route, RouteLayer, is_plain_get};

/// The path served.
pub const PATH: &str = "/metrics";

/// Content type of the OpenMetrics text format that `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether `req` is a scrape rather than an API call.
pub fn is_metrics_request<B>(req: &Request<B>) -> bool {
    is_plain_get(req) && req.uri().path() == PATH
}

/// The answer to a scrape with these request headers and extensions (the TLS peer certificate
/// lives in the extensions).
pub fn respond(
    auth: &Authenticator,
    parts: tonic::codegen::http::request::Parts,
) -> Response<tonic::body::Body> {
    let head = parts.method == Method::HEAD;
    let check = tonic::Request::from_http(Request::from_parts(parts, ()));
    if let Err(e) = auth.require(&check, Role::View, "GET /metrics") {
        let status = tonic::Status::from(e);
        let code = match status.code() {
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::debug!(reason = status.message(), "metrics scrape refused");
        let mut resp = text(
            code,
            format!("{}\n", status.message()),
            "text/plain; charset=utf-8",
        );
        if code == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return resp;
    }
    let body = super::global().encode();
    let mut resp = text(StatusCode::OK, body, CONTENT_TYPE);
    if head {
        *resp.body_mut() = tonic::body::Body::empty();
    }
    resp
}

fn text(code: StatusCode, body: String, content_type: &'static str) -> Response<tonic::body::Body> {
    let len = body.len();
    let mut resp = Response::new(tonic::body::Body::new(Full::new(Bytes::from(body))));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The routing hook: scrapes are answered here, everything else goes to tonic untouched.
pub type MetricsLayer = RouteLayer<MetricsRoute>;

impl MetricsLayer {
    pub fn new(auth: Authenticator) -> Self {
        RouteLayer::with(MetricsRoute { auth })
    }
}

/// The scrape [`Route`]: [`is_metrics_request`]s, answered by [`respond`].
#[derive(Debug, Clone)]
pub struct MetricsRoute {
    auth: Authenticator,
}

impl Route for MetricsRoute {
    fn matches<B>(&self, req: &Request<B>) -> bool {
        is_metrics_request(req)
    }

    fn respond(&self, head: request::Parts) -> BoxFuture<HttpResponse> {
        let auth = self.auth.clone();
        // The store lookups of the credential check are quick, local sled reads.
        Box::pin(async move { respond(&auth, head) })
    }
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn scrapes_need_a_known_user() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = crate::store::Store::open(&dir.path().join("s"))?;
        let auth = Authenticator::new(store);
        let inner = tower::service_fn(|_req: Request<tonic::body::Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let svc = MetricsLayer::new(auth).layer(inner);
        let call = |method: Method, path: &str, bearer: Option<&str>| {
            let mut b = Request::builder().method(method).uri(path);
            if let Some(t) = bearer {
                b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = b.body(tonic::body::Body::empty());
            let svc = svc.clone();
            async move { Ok::<_, Box<dyn std::error::Error>>(svc.oneshot(req?).await?) }
        };
        let none = call(Method::GET, "/metrics", None).await?;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            none.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
        assert_eq!(
            call(Method::GET, "/metrics", Some("nope")).await?.status(),
            StatusCode::UNAUTHORIZED
        );
        // Not a scrape: the inner service answers.
        assert_eq!(
            call(Method::POST, "/metrics", None).await?.status(),
            StatusCode::OK
        );
        assert_eq!(
            call(Method::GET, "/metricsx", None).await?.status(),
            StatusCode::OK
        );
        Ok(())
    }
}
