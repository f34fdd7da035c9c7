//! kube-rs watchers feeding the [`Inventory`].
//!
//! ```text
//!  API server ──list/watch──▶ watcher(DynamicObject) ──typed + convert──▶ apply/delete/reset ──▶ Index
//!                                                         │ bad object: warn, skip
//! ```
//!
//! Objects are watched untyped and converted one by one, so one object that does not parse is
//! logged and skipped instead of failing a whole list. A relist (`Init` … `InitDone`) becomes one
//! [`Index::reset`](super::Index::reset).

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Inventory,
    convert::{self, InvalidObject},
    index::{self, ANTREA_CLUSTER_POLICY, ANTREA_POLICY, Kind, Object},
};

/// Decodes an untyped object into its k8s-openapi type.
fn typed<K: k8s_openapi::Resource + DeserializeOwned>(
    mut obj: DynamicObject,
) -> Result<K, serde_json::Error> {
    obj.types = Some(TypeMeta {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
    });
    serde_json::from_value(serde_json::to_value(obj)?)
}

type Convert = fn(DynamicObject) -> Result<Object, String>;

fn decode<K, T>(
    obj: DynamicObject,
    f: fn(&K) -> Result<T, InvalidObject>,
    wrap: fn(T) -> Object,
) -> Result<Object, String>
where
    K: k8s_openapi::Resource + DeserializeOwned,
{
    let k: K = typed(obj).map_err(|e| format!("does not decode as {}: {e}", K::KIND))?;
    f(&k).map(wrap).map_err(|e| e.to_string())
}

fn conv_node(o: DynamicObject) -> Result<Object, String> {
    decode::<Node, _>(o, convert::node, Object::Node)
}
fn conv_namespace(o: DynamicObject) -> Result<Object, String> {
    decode::<Namespace, _>(o, convert::namespace, Object::Namespace)
}
fn conv_pod(o: DynamicObject) -> Result<Object, String> {
    decode::<Pod, _>(o, convert::pod, Object::Pod)
}
fn conv_service(o: DynamicObject) -> Result<Object, String> {
    decode::<Service, _>(o, convert::service, Object::Service)
}
fn conv_policy(o: DynamicObject) -> Result<Object, String> {
    decode::<NetworkPolicy, _>(o, convert::network_policy, Object::Policy)
}
fn conv_antrea_policy(o: DynamicObject) -> Result<Object, String> {
    convert::antrea_policy(&o, ANTREA_POLICY)
        .map(Object::Policy)
        .map_err(|e| e.to_string())
}
fn conv_antrea_cluster_policy(o: DynamicObject) -> Result<Object, String> {
    convert::antrea_policy(&o, ANTREA_CLUSTER_POLICY)
        .map(Object::Policy)
        .map_err(|e| e.to_string())
}
fn conv_tier(o: DynamicObject) -> Result<Object, String> {
    convert::tier(&o)
        .map(|t| Object::Tier(Box::new(t)))
        .map_err(|e| e.to_string())
}

fn conv_egress(o: DynamicObject) -> Result<Object, String> {
    convert::egress(&o)
        .map(|e| Object::Egress(Box::new(e)))
        .map_err(|e| e.to_string())
}

/// What one watcher watches.
struct Watched {
    kind: Kind,
    name: &'static str,
    resource: ApiResource,
    convert: Convert,
}

fn antrea(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("crd.antrea.io", "v1beta1", kind),
        plural,
    )
}

fn watched() -> Vec<Watched> {
    vec![
        Watched {
            kind: Kind::Node,
            name: "nodes",
            resource: ApiResource::erase::<Node>(&()),
            convert: conv_node,
        },
        Watched {
            kind: Kind::Namespace,
            name: "namespaces",
            resource: ApiResource::erase::<Namespace>(&()),
            convert: conv_namespace,
        },
        Watched {
            kind: Kind::Pod,
            name: "pods",
            resource: ApiResource::erase::<Pod>(&()),
            convert: conv_pod,
        },
        Watched {
            kind: Kind::Service,
            name: "services",
            resource: ApiResource::erase::<Service>(&()),
            convert: conv_service,
        },
        Watched {
            kind: Kind::Policy,
            name: "networkpolicies",
            resource: ApiResource::erase::<NetworkPolicy>(&()),
            convert: conv_policy,
        },
        Watched {
            kind: Kind::AntreaPolicy,
            name: "antrea-networkpolicies",
            resource: antrea("NetworkPolicy", "networkpolicies"),
            convert: conv_antrea_policy,
        },
        Watched {
            kind: Kind::AntreaClusterPolicy,
            name: "antrea-clusternetworkpolicies",
            resource: antrea("ClusterNetworkPolicy", "clusternetworkpolicies"),
            convert: conv_antrea_cluster_policy,
        },
        Watched {
            kind: Kind::Tier,
            name: "antrea-tiers",
            resource: antrea("Tier", "tiers"),
            convert: conv_tier,
        },
        Watched {
            kind: Kind::Egress,
            name: "antrea-egresses",
            resource: antrea("Egress", "egresses"),
            convert: conv_egress,
        },
    ]
}

/// Spawns one watcher task per kind; they run until aborted, retrying with kube's default
/// backoff (0.8 s doubling to 30 s) when the API server fails.
pub fn spawn_watchers(client: Client, inventory: Inventory) -> Vec<tokio::task::JoinHandle<()>> {
    watched()
        .into_iter()
        .map(|w| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &w.resource);
            let span = info_span!("watch", kind = w.name);
            tokio::spawn(watch_kind(api, w.kind, w.convert, inventory.clone()).instrument(span))
        })
        .collect()
}

async fn watch_kind(api: Api<DynamicObject>, kind: Kind, convert: Convert, inventory: Inventory) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<Object> = Vec::new();
    let mut failures = 0u32;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => {
                failures = 0;
                event
            }
            Err(error) => {
                failures += 1;
                // A missing Antrea CRD fails forever; say so once loudly, then quietly.
                if failures <= 3 {
                    warn!(%error, failures, "watch failed; retrying with backoff");
                } else {
                    debug!(%error, failures, "watch failed; retrying with backoff");
                }
                continue;
            }
        };
        match event {
            watcher::Event::Apply(obj) => {
                if let Some(obj) = checked(obj, convert) {
                    inventory.apply(obj);
                }
            }
            watcher::Event::Delete(obj) => {
                let key = kind.key(
                    obj.metadata.namespace.as_deref().unwrap_or_default(),
                    obj.metadata.name.as_deref().unwrap_or_default(),
                );
                inventory.delete(kind, &key);
            }
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(obj) => {
                if let Some(obj) = checked(obj, convert) {
                    buffer.push(obj);
                }
            }
            watcher::Event::InitDone => {
                let count = buffer.len();
                inventory.reset(kind, std::mem::take(&mut buffer));
                info!(count, "listed");
            }
        }
    }
}

fn checked(obj: DynamicObject, convert: Convert) -> Option<Object> {
    let name = index::key(
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
    );
    match convert(obj) {
        Ok(obj) => Some(obj),
        Err(error) => {
            warn!(%error, object = %name, "skipping object the index cannot use");
            None
        }
    }
}

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A kube client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<Client, KubeClientError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}
