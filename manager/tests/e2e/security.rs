//! Refused peers and the role matrix.

use tonic::{Code, Request};
use traceflow_proto::v1 as pb;

use super::common::*;

#[tokio::test]
async fn no_certificate_and_foreign_ca_are_refused() -> TestResult {
    let m = Manager::start().await?;
    // No certificate: the handshake completes, the RPC says how to authenticate.
    let mut anon = traces(m.channel(None).await?);
    let s = anon
        .list_traceflows(pb::ListTraceflowsRequest::default())
        .await
        .err()
        .ok_or("anonymous list accepted")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("client certificate"), "{s:?}");
    let s = clusters(m.channel(None).await?)
        .list_clusters(pb::ListClustersRequest {})
        .await
        .err()
        .ok_or("anonymous cluster list accepted")?;
    assert_eq!(s.code(), Code::Unauthenticated);

    // A certificate from another CA fails the handshake (or the RPC).
    let other = traceflow_pki::CertificateAuthority::generate("evil ca")?;
    let leaf = other.issue("local-admin", traceflow_pki::IdentityKind::User, &[])?;
    match m.channel(Some((&leaf.cert_pem, &leaf.key_pem))).await {
        Err(_) => {}
        Ok(ch) => {
            let r = traces(ch)
                .list_traceflows(pb::ListTraceflowsRequest::default())
                .await;
            assert!(r.is_err(), "foreign certificate accepted");
        }
    }
    // A cluster certificate from another CA cannot attach.
    let leaf = other.issue("alpha", traceflow_pki::IdentityKind::Cluster, &[])?;
    assert!(
        FakeAdapter::attach(&m, &leaf.cert_pem, &leaf.key_pem)
            .await
            .is_err()
    );

    // Bad bearer token.
    let mut req = Request::new(pb::ListTraceflowsRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer tfu-bogus".parse()?);
    let s = anon
        .list_traceflows(req)
        .await
        .err()
        .ok_or("bogus token accepted")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    Ok(())
}

/// Users made by the binary's `user create` (the role matrix itself is tested in process,
/// from the access table: tests/access.rs).
#[tokio::test]
async fn command_line_users_whoami_attach_and_revocation() -> TestResult {
    let m = Manager::start().await?;
    let (c, k) = m.user("viewer", "view", false)?;
    // WhoAmI: the caller as the manager knows it, for any role.
    let me = pb::user_service_client::UserServiceClient::new(m.channel(Some((&c, &k))).await?)
        .who_am_i(pb::WhoAmIRequest {})
        .await?
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.role),
        ("viewer", pb::Role::View as i32)
    );
    assert!(me.created_micros > 0);
    // A user certificate cannot attach as an adapter.
    let Err(s) = FakeAdapter::attach(&m, &c, &k).await else {
        return Err("user attached as adapter".into());
    };
    assert_eq!(s.code(), Code::PermissionDenied);
    // A deleted user's certificate stops working.
    let mut admin_users = pb::user_service_client::UserServiceClient::new(m.admin().await?);
    admin_users
        .delete_user(pb::DeleteUserRequest {
            name: "viewer".into(),
        })
        .await?;
    let s = traces(m.channel(Some((&c, &k))).await?)
        .list_traceflows(pb::ListTraceflowsRequest::default())
        .await
        .err()
        .ok_or("deleted user still works")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    Ok(())
}
