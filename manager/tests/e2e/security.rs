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

/// Calls every user-facing RPC; returns the codes in a fixed order.
async fn call_all(
    ch: tonic::transport::Channel,
    bearer: Option<&str>,
) -> Result<Vec<(&'static str, Code)>, Error> {
    fn req<T>(m: T, bearer: Option<&str>) -> Request<T> {
        let mut r = Request::new(m);
        if let Some(t) = bearer
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
    fn code<T>(r: Result<T, tonic::Status>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        }
    }
    let mut t = traces(ch.clone());
    let mut c = clusters(ch.clone());
    let mut u = pb::user_service_client::UserServiceClient::new(ch);
    let mut out = Vec::new();
    // Reads (view): NotFound counts as allowed.
    out.push((
        "GetTraceflow",
        code(
            t.get_traceflow(req(
                pb::GetTraceflowRequest {
                    uid: "x".into(),
                    name: String::new(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "ListTraceflows",
        code(
            t.list_traceflows(req(pb::ListTraceflowsRequest::default(), bearer))
                .await,
        ),
    ));
    out.push((
        "WatchTraceflow",
        code(
            t.watch_traceflow(req(
                pb::WatchTraceflowRequest {
                    uid: "x".into(),
                    name: String::new(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "ListClusters",
        code(
            c.list_clusters(req(pb::ListClustersRequest {}, bearer))
                .await,
        ),
    ));
    out.push((
        "GetCluster",
        code(
            c.get_cluster(req(
                pb::GetClusterRequest {
                    name: "nope".into(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "ListNodes",
        code(
            c.list_nodes(req(pb::ListInventoryRequest::default(), bearer))
                .await,
        ),
    ));
    out.push((
        "ListNamespaces",
        code(
            c.list_namespaces(req(pb::ListInventoryRequest::default(), bearer))
                .await,
        ),
    ));
    out.push((
        "ListPods",
        code(
            c.list_pods(req(pb::ListInventoryRequest::default(), bearer))
                .await,
        ),
    ));
    out.push((
        "ListServices",
        code(
            c.list_services(req(pb::ListInventoryRequest::default(), bearer))
                .await,
        ),
    ));
    // Edits.
    out.push((
        "CreateTraceflow",
        code(t.create_traceflow(req(create_req("nope"), bearer)).await),
    ));
    out.push((
        "DeleteTraceflow",
        code(
            t.delete_traceflow(req(
                pb::DeleteTraceflowRequest {
                    uid: "x".into(),
                    name: String::new(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "Retrace",
        code(
            t.retrace(req(
                pb::RetraceRequest {
                    uid: "x".into(),
                    name: String::new(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    // Admin.
    out.push((
        "CreateBootstrapToken",
        code(
            c.create_bootstrap_token(req(
                pb::CreateBootstrapTokenRequest {
                    cluster: "zz".into(),
                    ttl_seconds: 60,
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "DeregisterCluster",
        code(
            c.deregister_cluster(req(
                pb::DeregisterClusterRequest {
                    name: "nope".into(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "ListUsers",
        code(u.list_users(req(pb::ListUsersRequest {}, bearer)).await),
    ));
    out.push((
        "CreateUser",
        code(
            u.create_user(req(
                pb::CreateUserRequest {
                    name: "tmp".into(),
                    role: pb::Role::View as i32,
                    bearer_token: true,
                    csr_pem: String::new(),
                },
                bearer,
            ))
            .await,
        ),
    ));
    out.push((
        "DeleteUser",
        code(
            u.delete_user(req(pb::DeleteUserRequest { name: "tmp".into() }, bearer))
                .await,
        ),
    ));
    out.push((
        "WhoAmI",
        code(u.who_am_i(req(pb::WhoAmIRequest {}, bearer)).await),
    ));
    Ok(out)
}

fn needed(rpc: &str) -> u8 {
    match rpc {
        "CreateTraceflow" | "DeleteTraceflow" | "Retrace" => 1,
        "CreateBootstrapToken"
        | "DeregisterCluster"
        | "ListUsers"
        | "CreateUser"
        | "DeleteUser" => 2,
        _ => 0,
    }
}

#[tokio::test]
async fn role_matrix_for_every_rpc() -> TestResult {
    let m = Manager::start().await?;
    for (level, role) in ["view", "edit", "admin"].iter().enumerate() {
        for bearer in [false, true] {
            let name = format!("u-{role}-{}", if bearer { "tok" } else { "cert" });
            let (a, b) = m.user(&name, role, bearer)?;
            let results = if bearer {
                call_all(m.channel(None).await?, Some(&a)).await?
            } else {
                call_all(m.channel(Some((&a, &b))).await?, None).await?
            };
            for (rpc, code) in results {
                let allowed = level as u8 >= needed(rpc);
                if allowed {
                    assert!(
                        code != Code::PermissionDenied && code != Code::Unauthenticated,
                        "{name} should be allowed {rpc}, got {code:?}"
                    );
                } else {
                    assert_eq!(code, Code::PermissionDenied, "{name} calling {rpc}");
                }
            }
        }
    }
    // The denial names the role needed.
    let (c, k) = m.user("viewer", "view", false)?;
    let s = traces(m.channel(Some((&c, &k))).await?)
        .create_traceflow(create_req("x"))
        .await
        .err()
        .ok_or("viewer created a trace")?;
    assert!(s.message().contains("requires role edit"), "{s:?}");
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
    // No credentials at all: UNAUTHENTICATED on every RPC.
    for (rpc, code) in call_all(m.channel(None).await?, None).await? {
        assert_eq!(code, Code::Unauthenticated, "anonymous {rpc}");
    }
    // A cluster certificate cannot use the user APIs.
    let (cc, ck) = m.register("alpha").await?;
    for (rpc, code) in call_all(m.channel(Some((&cc, &ck))).await?, None).await? {
        assert_eq!(code, Code::PermissionDenied, "cluster calling {rpc}");
    }
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
