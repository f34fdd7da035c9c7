//! The web console's static files on the manager's TLS port: index, assets, 404, path
//! traversal, security headers; gRPC-Web and gRPC still answered on the same port.

use std::path::Path;

use super::common::*;

/// A built console in `dir/console` and a secret beside it that must never be served.
fn console_tree(dir: &Path) -> Result<String, Error> {
    let root = dir.join("console");
    std::fs::create_dir_all(root.join("assets"))?;
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><title>console</title>",
    )?;
    std::fs::write(root.join("assets/app-ABC123.js"), "console.log('app');")?;
    std::fs::write(root.join("assets/style-DEF456.css"), "body{}")?;
    std::fs::write(dir.join("secret.txt"), "TOP-SECRET")?;
    std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("assets/escape.txt"))?;
    Ok(path_str(&root))
}

/// One raw HTTP/1.1 request over TLS (ALPN http/1.1), the path sent exactly as given (no
/// client-side normalisation); returns the whole response as text.
async fn raw(m: &Manager, method: &str, path: &str, extra: &str) -> Result<String, Error> {
    let head =
        format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n{extra}connection: close\r\n\r\n");
    m.http1(head.as_bytes()).await
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

fn assert_security_headers(resp: &str) {
    let csp = header(resp, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{resp}");
    assert!(csp.contains("script-src 'self'"), "{resp}");
    assert!(csp.contains("connect-src 'self'"), "{resp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{resp}");
    assert_eq!(
        header(resp, "x-content-type-options"),
        Some("nosniff"),
        "{resp}"
    );
    assert_eq!(header(resp, "x-frame-options"), Some("DENY"), "{resp}");
}

#[tokio::test]
async fn console_files_are_served_with_security_headers() -> TestResult {
    let files = tempfile::tempdir()?;
    let root = console_tree(files.path())?;
    let m = Manager::start_with(&["--console-dir", &root]).await?;

    for path in ["/", "/index.html", "/?next=%2Fassets"] {
        let r = raw(&m, "GET", path, "").await?;
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
        assert_eq!(
            header(&r, "content-type"),
            Some("text/html; charset=utf-8"),
            "{r}"
        );
        assert_eq!(header(&r, "cache-control"), Some("no-store"), "{r}");
        assert_security_headers(&r);
        assert_eq!(body(&r), "<!doctype html><title>console</title>");
    }
    let r = raw(&m, "HEAD", "/", "").await?;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "content-length"), Some("37"), "{r}");
    assert_eq!(body(&r), "", "HEAD has no body");

    let r = raw(&m, "GET", "/assets/app-ABC123.js", "").await?;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        header(&r, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&r, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_security_headers(&r);
    assert_eq!(body(&r), "console.log('app');");
    let r = raw(&m, "GET", "/assets/style-DEF456.css", "").await?;
    assert_eq!(header(&r, "content-type"), Some("text/css; charset=utf-8"));

    let r = raw(&m, "GET", "/assets/missing.js", "").await?;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    assert_security_headers(&r);
    Ok(())
}

#[tokio::test]
async fn console_refuses_path_traversal() -> TestResult {
    let files = tempfile::tempdir()?;
    let root = console_tree(files.path())?;
    let m = Manager::start_with(&["--console-dir", &root]).await?;
    for path in [
        "/assets/../secret.txt",
        "/assets/../../secret.txt",
        "/assets/%2e%2e/secret.txt",
        "/assets/%2E%2E/%2e%2e/secret.txt",
        "/assets/..%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/..%5csecret.txt",
        "/assets/.%2e/secret.txt",
        "/assets//etc/passwd",
        "/assets/%2fetc%2fpasswd",
        "/assets/escape.txt",
        "/assets/app-ABC123.js%00.png",
    ] {
        let r = raw(&m, "GET", path, "").await?;
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        assert!(!r.contains("TOP-SECRET"), "{path} leaked the secret: {r}");
        assert!(!r.contains("root:"), "{path} leaked /etc/passwd: {r}");
        assert_security_headers(&r);
    }
    // Paths outside `/` and `/assets/` are not the console's: they reach tonic unchanged
    // (which never serves files either).
    for path in ["/../secret.txt", "/secret.txt", "/console/index.html"] {
        let r = raw(&m, "GET", path, "").await?;
        assert!(!r.contains("TOP-SECRET"), "{path} leaked the secret: {r}");
        assert!(
            !r.contains("<title>console"),
            "{path} served the console: {r}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn grpc_and_grpc_web_still_work_with_the_console_on() -> TestResult {
    let files = tempfile::tempdir()?;
    let root = console_tree(files.path())?;
    let m = Manager::start_with(&["--console-dir", &root]).await?;
    // gRPC over h2 with the admin certificate.
    let mut c = clusters(m.admin().await?);
    let list = c
        .list_clusters(traceflow_proto::v1::ListClustersRequest::default())
        .await?
        .into_inner();
    assert!(list.clusters.is_empty());
    // gRPC-Web over HTTP/1.1: a POST, with a gRPC content type.
    let r = raw(
        &m,
        "POST",
        "/grpc.health.v1.Health/Check",
        "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: 0\r\n",
    )
    .await?;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("application/grpc-web"), "{r}");
    Ok(())
}

#[test]
fn a_console_dir_without_index_html_stops_the_start() -> TestResult {
    let files = tempfile::tempdir()?;
    let empty = files.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(files.path().join("data"))
        .arg("--console-dir")
        .arg(&empty)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("manager kept running with a console directory without index.html".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err)?;
    }
    assert!(!status.success(), "{err}");
    assert!(err.contains("has no index.html"), "{err}");
    Ok(())
}
