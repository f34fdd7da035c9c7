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
        .list_clusters(pb::ListClustersRequest::default())
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

/// Every file and directory below `path` (itself included), with its permission bits.
fn modes(path: &std::path::Path) -> Result<Vec<(std::path::PathBuf, u32)>, Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![(
        path.to_path_buf(),
        std::fs::metadata(path)?.permissions().mode() & 0o777,
    )];
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            out.extend(modes(&e?.path())?);
        }
    }
    Ok(out)
}

/// The data directory holds the CA key: 0700, every file of the manager's (sled's included)
/// 0600; a looser one makes the next start refuse, naming the path. The key is never logged
/// nor returned by an RPC.
#[tokio::test]
async fn data_directory_is_private_and_the_ca_key_stays_in_it() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let mut m = Manager::start_process().await?;
    let (cert, _) = m.register("alpha").await?;
    let created = pb::user_service_client::UserServiceClient::new(m.admin().await?)
        .create_user(pb::CreateUserRequest {
            name: "bot".into(),
            role: pb::Role::View as i32,
            bearer_token: true,
            csr_pem: String::new(),
            token_ttl_seconds: 0,
        })
        .await?
        .into_inner();
    m.terminate().await?;

    assert_eq!(
        std::fs::metadata(&m.dir)?.permissions().mode() & 0o777,
        0o700
    );
    let mut ours = modes(&m.dir.join("store"))?;
    for f in ["ca.pem", "local-admin.pem", "local-admin-key.pem"] {
        ours.extend(modes(&m.dir.join(f))?);
    }
    assert!(ours.len() > 6, "store files listed: {ours:?}");
    for (path, mode) in &ours {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{}", path.display());
    }

    // Read the key the way an operator with access would (this process's umask is not the
    // manager's, so only after the modes above were checked).
    let ca = traceflow_manager::store::Store::open(&m.dir.join("store"))?
        .ca()?
        .ok_or("no CA in the store")?;
    let sled_files: Vec<_> = modes(&m.dir.join("store"))?;
    let key_body: String = ca
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(key_body.len() > 40, "a real key");
    for (what, text) in [
        ("log", m.log()),
        ("registration response", cert),
        ("user response", format!("{created:?}")),
    ] {
        assert!(
            !text.contains(&key_body[..40]) && !text.contains("PRIVATE KEY"),
            "the CA key leaked into the {what}"
        );
    }

    // One loosened sled file: the next start refuses and names it.
    let loose = sled_files
        .iter()
        .map(|(p, _)| p)
        .find(|p| p.is_file() && p.starts_with(m.dir.join("store")))
        .ok_or("no sled file")?;
    std::fs::set_permissions(loose, std::fs::Permissions::from_mode(0o644))?;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&m.dir)
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a 0644 store file");
    assert!(
        stderr.contains(&loose.display().to_string()) && stderr.contains("644"),
        "{stderr}"
    );
    for (path, _) in &sled_files {
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    m.spawn().await?;
    Ok(())
}

/// Credentials by serial and expiry: re-issuing a user's certificate revokes the old one, a
/// deleted and re-created user does not bring its old certificate back, bearer tokens expire
/// and can be revoked one by one, and token lifetimes are bounded.
#[tokio::test]
async fn reissued_deleted_expired_and_revoked_credentials_stop_working() -> TestResult {
    let m =
        Manager::start_with(&["--bearer-token-ttl", "10m", "--bearer-token-max-ttl", "1h"]).await?;
    let list = |ch| async move {
        traces(ch)
            .list_traceflows(pb::ListTraceflowsRequest::default())
            .await
            .map(|_| ())
    };
    let (old_c, old_k) = m.user("ann", "view", false)?;
    list(m.channel(Some((&old_c, &old_k))).await?).await?;
    // Re-issued: the new certificate works, the old one is refused.
    let (new_c, new_k) = m.user("ann", "view", false)?;
    list(m.channel(Some((&new_c, &new_k))).await?).await?;
    let s = list(m.channel(Some((&old_c, &old_k))).await?)
        .await
        .err()
        .ok_or("superseded certificate still works")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("revoked or superseded"), "{s:?}");
    // Deleted, then re-created with only a token: neither certificate comes back.
    let mut users = pb::user_service_client::UserServiceClient::new(m.admin().await?);
    users
        .delete_user(pb::DeleteUserRequest { name: "ann".into() })
        .await?;
    let mk_token = |ttl: i64| pb::CreateUserRequest {
        name: "ann".into(),
        role: pb::Role::View as i32,
        bearer_token: true,
        csr_pem: String::new(),
        token_ttl_seconds: ttl,
    };
    let first = users.create_user(mk_token(0)).await?.into_inner();
    for (c, k) in [(&old_c, &old_k), (&new_c, &new_k)] {
        let s = list(m.channel(Some((c, k))).await?)
            .await
            .err()
            .ok_or("certificate of a deleted user works again")?;
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    // Default expiry is set; over the maximum is refused.
    assert!(first.token_expires_micros > 0 && first.token_id.len() == 16);
    let s = users
        .create_user(mk_token(7200))
        .await
        .err()
        .ok_or("token longer than the maximum")?;
    assert_eq!(s.code(), Code::InvalidArgument);
    let with_token = |token: String| {
        let mut req = Request::new(pb::ListTraceflowsRequest::default());
        if let Ok(v) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        req
    };
    let mut anon = traces(m.channel(None).await?);
    anon.list_traceflows(with_token(first.token.clone()))
        .await?;
    // Revoked one by one: the other token keeps working.
    let second = users.create_user(mk_token(0)).await?.into_inner();
    users
        .revoke_token(pb::RevokeTokenRequest {
            token_id: first.token_id.clone(),
        })
        .await?;
    let s = anon
        .list_traceflows(with_token(first.token.clone()))
        .await
        .err()
        .ok_or("revoked token works")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    anon.list_traceflows(with_token(second.token)).await?;
    // A one-second token expires.
    let short = users.create_user(mk_token(1)).await?.into_inner();
    anon.list_traceflows(with_token(short.token.clone()))
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let s = anon
        .list_traceflows(with_token(short.token))
        .await
        .err()
        .ok_or("expired token works")?;
    assert_eq!(s.code(), Code::Unauthenticated);
    // Bootstrap tokens have a maximum lifetime.
    let out = m.cli(&["token", "create", "--cluster", "c1", "--ttl", "30d"])?;
    assert!(!out.status.success(), "a 30-day bootstrap token was minted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most"));
    Ok(())
}
