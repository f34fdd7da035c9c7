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

/// `RenewClusterCertificate` with the cluster's current certificate: `(cert, key)` renewed.
async fn renew(
    m: &Manager,
    (cert, key): (&str, &str),
    csr_name: &str,
) -> Result<(String, String), tonic::Status> {
    let (csr_pem, new_key) = traceflow_pki::generate_csr(csr_name)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let ch = m
        .channel(Some((cert, key)))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = pb::registration_service_client::RegistrationServiceClient::new(ch)
        .renew_cluster_certificate(pb::RenewClusterCertificateRequest { csr_pem })
        .await?
        .into_inner();
    Ok((resp.certificate_pem, new_key))
}

#[tokio::test]
async fn cluster_certificate_renewal_revokes_the_old_one_and_keeps_the_cluster_working()
-> TestResult {
    let mut m = Manager::start_with(&["--leaf-cert-lifetime", "30s"]).await?;
    let (cert, key) = m.register("alpha").await?;
    let old = traceflow_pki::pem_identity(&cert)?;
    // The configured lifetime (leaves are back-dated 5 minutes against clock skew).
    assert_eq!(old.not_after - old.not_before, 30 + 300, "{old:?}");
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter
        .sync_pods(&[("default", "p0", "n0"), ("default", "p1", "n0")])
        .await?;

    // Only for the cluster itself: another CN, a user, no credential are refused.
    let s = renew(&m, (&cert, &key), "beta")
        .await
        .err()
        .ok_or("renewed for another name")?;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("must name \"alpha\""), "{s:?}");
    let (admin_cert, admin_key) = m.admin_identity()?;
    let s = renew(&m, (&admin_cert, &admin_key), "alpha")
        .await
        .err()
        .ok_or("a user renewed a cluster certificate")?;
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let mut anonymous =
        pb::registration_service_client::RegistrationServiceClient::new(m.channel(None).await?);
    let s = anonymous
        .renew_cluster_certificate(pb::RenewClusterCertificateRequest {
            csr_pem: traceflow_pki::generate_csr("alpha")?.0,
        })
        .await
        .err()
        .ok_or("renewed without a certificate")?;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    let (cert2, key2) = renew(&m, (&cert, &key), "alpha").await?;
    let new = traceflow_pki::pem_identity(&cert2)?;
    assert_eq!(
        (new.name.as_str(), new.kind),
        ("alpha", traceflow_pki::IdentityKind::Cluster)
    );
    assert_ne!(new.serial, old.serial);
    assert_eq!(new.not_after - new.not_before, 30 + 300);
    // The open stream of the old certificate ends at its next message; the old certificate is
    // refused from now on, renewing included.
    adapter.heartbeat(1, 1).await?;
    let end = loop {
        match adapter.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let Err(s) = end else {
        return Err(format!("the old certificate's stream stayed open: {end:?}").into());
    };
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let Err(s) = FakeAdapter::attach(&m, &cert, &key).await else {
        return Err("the renewed-away certificate attached".into());
    };
    assert!(s.message().contains("superseded"), "{s:?}");
    let s = renew(&m, (&cert, &key), "alpha")
        .await
        .err()
        .ok_or("renewed twice with one certificate")?;
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // The new certificate attaches, and a trace runs through it.
    let mut adapter = FakeAdapter::attach(&m, &cert2, &key2).await?;
    adapter
        .sync_pods(&[("default", "p0", "n0"), ("default", "p1", "n0")])
        .await?;
    let t = traces(m.admin().await?);
    let created = t
        .clone()
        .create_traceflow(create_req("alpha"))
        .await?
        .into_inner();
    let started = adapter.expect_start().await?;
    assert_eq!(started.uid, created.uid);
    adapter
        .update(&created.uid, pb::TraceflowPhase::Succeeded)
        .await?;
    eventually_phase(
        &t,
        &created.uid,
        pb::TraceflowPhase::Succeeded,
        "the trace through the renewed certificate",
    )
    .await?;
    // Renewal is audited.
    drop(adapter);
    m.stop().await;
    let events = audit(&m)?;
    assert!(
        events
            .iter()
            .any(|e| e.action == "renew-certificate" && e.detail.contains(&new.serial)),
        "{events:?}"
    );
    Ok(())
}
