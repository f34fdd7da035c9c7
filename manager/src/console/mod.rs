//! The web console's static files, served on the manager's one TLS port (same origin as the
//! API, so the browser's gRPC-Web calls need no CORS).
//!
//! ```text
//!   request ─▶ ConsoleService ─┬─ GET/HEAD `/`, `/index.html`, `/assets/<file>`, not gRPC
//!                              │     └─▶ a file under the console directory (or 404)
//!                              └─ anything else (gRPC, gRPC-Web, other paths) ─▶ tonic, unchanged
//! ```
//!
//! Contract (docs/contracts.md "Web console"):
//! - only regular files under the canonical console directory are served: every path segment
//!   is percent-decoded and must be a plain name (no `..`, `.`, empty, dot-files, `\`, NUL),
//!   and the resolved path, symlinks followed, must still lie inside the directory;
//! - every answer carries `Content-Security-Policy` (self only), `X-Content-Type-Options:
//!   nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`;
//! - `index.html` is `Cache-Control: no-store`; files under `assets/` are content-hashed by the
//!   build and cached as immutable; 404s are `no-store`.
//! - without a console directory the console paths answer 404 with how to enable it.

mod files;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use http_body_util::Full;
use tonic::codegen::http::{self, HeaderValue, Method, Request, Response, StatusCode, header};

pub use files::{NotServed, resolve};

use crate::http_route::{BoxFuture, HttpResponse, Route, RouteLayer, is_plain_get};

/// The console's Content-Security-Policy: everything from this origin only, no inline code.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Errors opening the console directory.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "console directory {path}: {source}; build the console (scripts/build-console.sh) or point --console-dir at a built one"
    )]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "console directory {0} has no index.html; build the console (scripts/build-console.sh) first"
    )]
    NoIndex(PathBuf),
}

/// A built console: the canonical directory holding `index.html` and `assets/`.
#[derive(Debug, Clone)]
pub struct Console {
    root: PathBuf,
}

impl Console {
    /// Opens `dir`, which must exist and contain `index.html`.
    pub fn open(dir: &Path) -> Result<Self, ConsoleError> {
        let root = dir.canonicalize().map_err(|source| ConsoleError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        if !root.join("index.html").is_file() {
            return Err(ConsoleError::NoIndex(root));
        }
        Ok(Console { root })
    }

    /// The canonical directory files are served from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The answer to a console request for `path` (`HEAD` gets the headers only).
    pub async fn respond(&self, method: &Method, path: &str) -> Response<tonic::body::Body> {
        let file = match resolve(&self.root, path) {
            Ok(f) => f,
            Err(why) => {
                tracing::debug!(path, reason = %why, "console file not served");
                return not_found("no such file in the web console\n");
            }
        };
        let bytes = match tokio::fs::read(&file.path).await {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, path = %file.path.display(), "cannot read console file");
                return not_found("no such file in the web console\n");
            }
        };
        let cache = if file.is_index {
            "no-store"
        } else {
            "public, max-age=31536000, immutable"
        };
        let len = bytes.len();
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(bytes)
        };
        let mut resp = Response::new(tonic::body::Body::new(Full::new(body)));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&file.path)),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        security_headers(h);
        resp
    }
}

/// Whether `req` is for the console rather than the API: a GET or HEAD, not gRPC, for `/`,
/// `/index.html` or something under `/assets/`.
pub fn is_console_request<B>(req: &Request<B>) -> bool {
    let path = req.uri().path();
    is_plain_get(req) && (path == "/" || path == "/index.html" || path.starts_with("/assets/"))
}

fn security_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn not_found(text: &'static str) -> Response<tonic::body::Body> {
    let mut resp = Response::new(tonic::body::Body::new(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    resp
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The routing hook: console requests are answered here, everything else goes to tonic's
/// routes (gRPC-Web included) untouched.
pub type ConsoleLayer = RouteLayer<ConsoleRoute>;

impl ConsoleLayer {
    /// `None`: no console installed; its paths answer 404 saying how to enable it.
    pub fn new(console: Option<Console>) -> Self {
        RouteLayer::with(ConsoleRoute(console.map(Arc::new)))
    }
}

/// The console's [`Route`]: [`is_console_request`]s, answered from the console directory.
#[derive(Debug, Clone)]
pub struct ConsoleRoute(Option<Arc<Console>>);

impl Route for ConsoleRoute {
    fn matches<B>(&self, req: &Request<B>) -> bool {
        is_console_request(req)
    }

    fn respond(&self, head: http::request::Parts) -> BoxFuture<HttpResponse> {
        let console = self.0.clone();
        Box::pin(async move {
            match console {
                Some(c) => c.respond(&head.method, head.uri.path()).await,
                None => not_found(
                    "the web console is not installed on this manager: start it with --console-dir DIR (a built manager/console/dist)\n",
                ),
            }
        })
    }
}

/// The default console directory: `console/` next to the running executable, when it exists
/// (`scripts/build-console.sh` links `target/debug/console` to the built bundle).
pub fn default_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.join("console");
    dir.join("index.html").is_file().then_some(dir)
}

#[cfg(test)]
mod tests {
    use tower::{Layer, ServiceExt};

    use super::*;

    /// The routing hook with no console installed: its paths answer 404 saying how to enable
    /// it; everything else reaches the inner service.
    #[tokio::test]
    async fn routes_only_console_requests() -> Result<(), Box<dyn std::error::Error>> {
        let inner = tower::service_fn(|_req: Request<tonic::body::Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let svc = ConsoleLayer::new(None).layer(inner);
        let call = |method: Method, path: &str, grpc: bool| {
            let mut b = Request::builder().method(method).uri(path);
            if grpc {
                b = b.header(header::CONTENT_TYPE, "application/grpc-web+proto");
            }
            let req = b.body(tonic::body::Body::empty());
            let svc = svc.clone();
            async move { Ok::<_, Box<dyn std::error::Error>>(svc.oneshot(req?).await?.status()) }
        };
        assert_eq!(call(Method::GET, "/", false).await?, StatusCode::NOT_FOUND);
        assert_eq!(
            call(Method::HEAD, "/assets/a.js", false).await?,
            StatusCode::NOT_FOUND
        );
        // Not the console's: the inner service answers (200 here).
        assert_eq!(call(Method::POST, "/", false).await?, StatusCode::OK);
        assert_eq!(call(Method::GET, "/", true).await?, StatusCode::OK);
        assert_eq!(
            call(Method::GET, "/traceflow.v1.TraceflowService/x", false).await?,
            StatusCode::OK
        );
        Ok(())
    }
}
