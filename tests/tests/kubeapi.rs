//! The lab's Kubernetes API, read and written with the real `kube` client: TLS with the lab CA,
//! bearer token from the kubeconfig the lab writes, paginated LIST, `watcher` (LIST + WATCH from
//! the list's resourceVersion), and Traceflow create / status / delete.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
};
use serde_json::json;
use traceflow_lab::{kubeapi, topology};

struct Server {
    client: Client,
    kubeconfig: std::path::PathBuf,
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(cfg)?)
}

/// Serves `one-node.yaml`'s cluster in-process, exactly as `serve-api` does.
async fn start(token: &str) -> Result<Server> {
    let topo =
        topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/one-node.yaml"))?;
    let cluster = &topo.clusters[0];
    let store = kubeapi::store::Store::with_objects(cluster.objects.clone())?;
    let ca = traceflow_pki::CertificateAuthority::generate("test lab ca")?;
    let leaf = ca.issue_server("kubernetes", &["localhost".into(), "127.0.0.1".into()])?;
    let tls = traceflow_pki::rustls_server_config(&leaf.cert_pem, &leaf.key_pem)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = kubeapi::server::ApiState::new("c1", "secret-token", store);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kubeapi::server::serve(listener, tls, state, async {
        let _ = rx.await;
    }));
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem())?;
    let url = format!("https://{addr}");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeapi::kubeconfig("c1", &url, &ca_path, token),
    )?;
    Ok(Server {
        client: client_for(&kubeconfig).await?,
        kubeconfig,
        url,
        _dir: dir,
        stop: Some(tx),
    })
}

#[tokio::test]
async fn kube_client_lists_nodes_pods_services_namespaces() -> Result<()> {
    let s = start("secret-token").await?;
    let pods: Api<Pod> = Api::all(s.client.clone());
    let list = pods.list(&ListParams::default()).await?;
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["p0", "p1", "p2"]);
    let p0: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let p0 = p0.get("p0").await?;
    let status = p0.status.context("p0 has a status")?;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ips: Vec<String> = status
        .pod_ips
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip)
        .collect();
    assert_eq!(ips, ["10.10.0.2"]);
    assert_eq!(p0.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));

    let nodes: Api<Node> = Api::all(s.client.clone());
    let n1 = nodes.get("n1").await?;
    assert_eq!(
        n1.spec.and_then(|s| s.pod_cidrs).unwrap_or_default(),
        ["10.10.0.0/24"]
    );
    let internal: Vec<String> = n1
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .collect();
    assert_eq!(internal, ["192.168.77.2"]);

    let svcs: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let web = svcs.get("web").await?;
    assert_eq!(
        web.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("10.96.0.1")
    );
    let nss: Api<Namespace> = Api::all(s.client.clone());
    assert!(nss.get("default").await.is_ok());

    // Label selectors and pagination.
    let web_pods = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(web_pods.items.len(), 2);
    let page = pods.list(&ListParams::default().limit(2)).await?;
    assert_eq!(page.items.len(), 2);
    let token = page
        .metadata
        .continue_
        .clone()
        .context("a continue token")?;
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await?;
    assert_eq!(rest.items.len(), 1);
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));
    let by_node = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await?;
    assert_eq!(by_node.items.len(), 3);
    Ok(())
}

#[tokio::test]
async fn watcher_sees_initial_objects_then_changes() -> Result<()> {
    let s = start("secret-token").await?;
    let pods: Api<Pod> = Api::all(s.client.clone());
    // page_size 1 forces the paginated initial LIST.
    let cfg = watcher::Config::default().page_size(1).timeout(1);
    let mut stream = watcher(pods, cfg).boxed();
    let mut initial = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .context("watcher initial list timed out")??;
        match ev {
            Some(watcher::Event::InitApply(p)) => initial.push(p.metadata.name.unwrap_or_default()),
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => bail!("watch stream ended"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["p0", "p1", "p2"]);

    // Outlive the 1 s server-side watch timeout: the watcher must resume from its
    // resourceVersion and still see what follows.
    let keep_polling = tokio::time::timeout(Duration::from_millis(2500), stream.try_next()).await;
    assert!(
        keep_polling.is_err(),
        "no event expected yet: {keep_polling:?}"
    );
    let api: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let new: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p9", "labels": {"app": "late"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
    }))?;
    api.create(&PostParams::default(), &new).await?;
    api.delete("p1", &Default::default()).await?;
    let mut applied = false;
    let mut deleted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(applied && deleted) {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .context("watcher did not see the change")??;
        match ev {
            Some(watcher::Event::Apply(p)) if p.metadata.name.as_deref() == Some("p9") => {
                applied = true
            }
            Some(watcher::Event::Delete(p)) if p.metadata.name.as_deref() == Some("p1") => {
                deleted = true
            }
            Some(_) => {}
            None => bail!("watch stream ended"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn traceflow_crd_create_status_delete() -> Result<()> {
    let s = start("secret-token").await?;
    let gvk = GroupVersionKind::gvk("crd.traceflow.io", "v1beta1", "Traceflow");
    let ar = ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = Api::all_with(s.client.clone(), &ar);
    let tf = DynamicObject::new("p0-to-p1", &ar).data(json!({
        "spec": {"source": {"namespace": "default", "pod": "p0"},
                 "destination": {"namespace": "default", "pod": "p1"}}
    }));
    let created = api.create(&PostParams::default(), &tf).await?;
    assert!(created.metadata.uid.is_some());
    let patched = api
        .patch_status(
            "p0-to-p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await?;
    assert_eq!(
        patched.data.pointer("/status/phase"),
        Some(&json!("Running"))
    );
    let mut got = api.get("p0-to-p1").await?;
    assert_eq!(got.data.pointer("/spec/source/pod"), Some(&json!("p0")));
    got.data["status"] = json!({"phase": "Succeeded"});
    let replaced = api
        .replace_status("p0-to-p1", &PostParams::default(), &got)
        .await?;
    assert_eq!(
        replaced.data.pointer("/status/phase"),
        Some(&json!("Succeeded"))
    );
    // A stale resourceVersion is a 409 Conflict.
    let stale = api
        .replace_status("p0-to-p1", &PostParams::default(), &got)
        .await;
    assert!(
        matches!(stale, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{stale:?}"
    );
    api.delete("p0-to-p1", &Default::default()).await?;
    let gone = api.get("p0-to-p1").await;
    assert!(
        matches!(gone, Err(kube::Error::Api(ref e)) if e.code == 404),
        "{gone:?}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_token_is_unauthorized() -> Result<()> {
    let s = start("not-the-token").await?;
    let pods: Api<Pod> = Api::all(s.client.clone());
    let err = pods.list(&ListParams::default()).await;
    assert!(
        matches!(err, Err(kube::Error::Api(ref e)) if e.code == 401),
        "{err:?}"
    );
    // The kubeconfig points at the server we started.
    let text = std::fs::read_to_string(&s.kubeconfig)?;
    assert!(text.contains(&s.url));
    Ok(())
}
