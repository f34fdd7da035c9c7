//! The registration matrix.

use tonic::Code;
use traceflow_proto::v1 as pb;

use super::common::*;

#[tokio::test]
async fn registration_matrix() -> TestResult {
    let mut m = Manager::start().await?;

    // Valid: certificate with CN = cluster, OU traceflow-cluster, then Attach works.
    let token = m.token("alpha", "1h")?;
    let (cert, key) = register(&m, "alpha", &token).await?;
    let id = traceflow_pki::pem_identity(&cert)?;
    assert_eq!(id.name, "alpha");
    assert_eq!(id.kind, traceflow_pki::IdentityKind::Cluster);
    FakeAdapter::attach(&m, &cert, &key).await?;

    // Reused token: says it was already used.
    let Err(RegisterError::Status(s)) = register(&m, "alpha", &token).await else {
        return Err("reused token accepted".into());
    };
    assert!(s.message().contains("already used"), "{s:?}");

    // Expired token (ttl 1s).
    let token = m.token("beta", "1s")?;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let Err(RegisterError::Status(s)) = register(&m, "beta", &token).await else {
        return Err("expired token accepted".into());
    };
    assert!(s.message().contains("expired at"), "{s:?}");

    // Token minted for another cluster name.
    let token = m.token("gamma", "1h")?;
    let Err(RegisterError::Status(s)) = register(&m, "delta", &token).await else {
        return Err("token for another cluster accepted".into());
    };
    assert!(
        s.message().contains("minted for cluster \"gamma\""),
        "{s:?}"
    );

    // CSR naming another cluster.
    let Err(RegisterError::Status(s)) = register_csr_name(&m, "gamma", "alpha", &token).await
    else {
        return Err("csr for another name accepted".into());
    };
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("csr_pem"), "{s:?}");
    // The token survives a refused attempt and still works.
    register(&m, "gamma", &token).await?;

    // Takeover of a registered name refused, saying to deregister first.
    let token = m.token("alpha", "1h")?;
    let Err(RegisterError::Status(s)) = register(&m, "alpha", &token).await else {
        return Err("takeover accepted".into());
    };
    assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
    assert!(s.message().contains("deregister it first"), "{s:?}");

    // Unknown token.
    let Err(RegisterError::Status(s)) = register(&m, "alpha", "tfb-nope").await else {
        return Err("unknown token accepted".into());
    };
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Every registration is in the store's audit log; refusals once per burst and cluster
    // (alpha's three refusals within seconds are one event).
    m.stop().await;
    let events = audit(&m)?;
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(count("register"), 2, "{events:#?}");
    assert_eq!(count("register-refused"), 4, "{events:#?}");
    assert!(count("token-create") >= 4);
    assert!(events.iter().any(|e| e.action == "register-refused"
        && e.subject == "alpha"
        && e.detail.contains("already used")));
    Ok(())
}

fn audit(m: &Manager) -> Result<Vec<traceflow_manager::store::AuditEvent>, Error> {
    let store = traceflow_manager::store::Store::open(&m.dir.join("store"))?;
    Ok(store.audit_events()?)
}

#[tokio::test]
async fn deregister_revokes_closes_and_allows_reregistration() -> TestResult {
    let mut m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.sync_pods(&[("default", "p0", "n0")]).await?;
    adapter.heartbeat(1, 1).await?;
    let mut admin = clusters(m.admin().await?);
    eventually("inventory", || {
        let mut c = admin.clone();
        async move {
            c.list_pods(pb::ListInventoryRequest {
                cluster: "alpha".into(),
                ..Default::default()
            })
            .await
            .is_ok_and(|r| r.into_inner().pods.len() == 1)
        }
    })
    .await?;

    admin
        .deregister_cluster(pb::DeregisterClusterRequest {
            name: "alpha".into(),
        })
        .await?;
    // The open stream is closed with an error.
    let end = loop {
        match adapter.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let Err(s) = end else {
        return Err(format!("stream not closed with an error: {end:?}").into());
    };
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // The old certificate is refused on connect.
    let Err(s) = FakeAdapter::attach(&m, &cert, &key).await else {
        return Err("revoked certificate attached".into());
    };
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("revoked"), "{s:?}");
    // Inventory gone, cluster gone.
    let r = admin
        .list_pods(pb::ListInventoryRequest {
            cluster: "alpha".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(r.err().map(|s| s.code()), Some(Code::NotFound));
    // Re-registration works, and the new certificate attaches.
    let (cert2, key2) = m.register("alpha").await?;
    FakeAdapter::attach(&m, &cert2, &key2).await?;

    // Deregistration is audited.
    drop(admin);
    m.stop().await;
    let events = audit(&m)?;
    assert!(
        events
            .iter()
            .any(|e| e.action == "deregister" && e.subject == "alpha")
    );
    Ok(())
}
