//! The command line without a running manager, and a clean stop.

use std::process::Command;

use traceflow_proto::v1 as pb;

use super::common::*;

#[tokio::test]
async fn offline_token_and_user_then_serve() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--cluster",
            "alpha",
            "--ttl",
            "10m",
            "--data-dir",
        ])
        .arg(&dir)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(token.starts_with("tfb-"), "{token}");
    let users = tmp.path().join("users");
    let out = Command::new(BIN)
        .args(["user", "create", "ops", "--role", "edit", "--data-dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&users)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ops.pem", "ops-key.pem", "ca.pem", "ops.tfctl.yaml"] {
        assert!(users.join(f).exists(), "{f} missing");
    }
    let cfg = std::fs::read_to_string(users.join("ops.tfctl.yaml"))?;
    assert!(
        cfg.contains("serverName: localhost") && cfg.contains("cert: ops.pem"),
        "{cfg}"
    );
    for f in ["ca.pem", "local-admin.pem", "local-admin-key.pem"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }

    let mut m = Manager::start_in(&dir).await?;
    // The offline token registers; the offline user works with its role.
    register(&m, "alpha", &token).await?;
    let (c, k) = (
        std::fs::read_to_string(users.join("ops.pem"))?,
        std::fs::read_to_string(users.join("ops-key.pem"))?,
    );
    let mut t = traces(m.channel(Some((&c, &k))).await?);
    let tr = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(tr.created_by, "ops");
    // A bearer-token user made through the running manager.
    let (tok, _) = m.user("console", "view", true)?;
    let mut req = tonic::Request::new(pb::ListTraceflowsRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {tok}").parse()?);
    let list = traces(m.channel(None).await?)
        .list_traceflows(req)
        .await?
        .into_inner();
    assert_eq!(list.traceflows.len(), 1);

    // SIGTERM with an adapter stream open: the manager still exits promptly and cleanly.
    let (cert, key) = m.register("beta").await?;
    let _adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let status = m.terminate().await?;
    assert!(status.success(), "exit status {status}");
    assert!(!dir.join("listen.addr").exists(), "listen.addr left behind");
    Ok(())
}
