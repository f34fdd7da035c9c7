//! Fleet verbs: `cluster list|get`, the inventory listings (`pods`, `services`, `nodes`,
//! `namespaces`) and `version`.

use serde::Serialize;
use traceflow_proto::v1 as pb;

use super::{CliError, rpc};
use crate::{
    client::Clients,
    output::{self, Format},
    tables, term,
};

/// `tfctl cluster list`: health, agents and inventory counts of every cluster.
pub async fn list_clusters(clients: &mut Clients, format: Format) -> Result<(), CliError> {
    let resp = clients
        .clusters
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .map_err(rpc("listing clusters"))?
        .into_inner();
    match format.machine() {
        // Only the clusters: the manager's version is `tfctl version`'s business.
        Some(m) => print!(
            "{}",
            output::render(
                &pb::ListClustersResponse {
                    clusters: resp.clusters,
                    ..Default::default()
                },
                m
            )?
        ),
        None => print!(
            "{}",
            tables::clusters(
                &resp.clusters,
                format == Format::Wide,
                term::colour_stdout()
            )
        ),
    }
    Ok(())
}

/// `tfctl cluster get NAME`.
pub async fn get_cluster(
    clients: &mut Clients,
    name: &str,
    format: Format,
) -> Result<(), CliError> {
    let c = clients
        .clusters
        .get_cluster(pb::GetClusterRequest { name: name.into() })
        .await
        .map_err(rpc("getting the cluster"))?
        .into_inner();
    match format.machine() {
        Some(m) => print!("{}", output::render(&c, m)?),
        None => print!(
            "{}",
            tables::clusters(&[c], format == Format::Wide, term::colour_stdout())
        ),
    }
    Ok(())
}

/// Which inventory listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inventory {
    Pods,
    Services,
    Nodes,
    Namespaces,
}

/// Every page of one listing, merged into one response (so `-o json` is the RPC's response
/// shape without a page token).
async fn all_pages<R, F, Fut>(
    base: pb::ListInventoryRequest,
    mut call: F,
    mut merge: impl FnMut(&mut R, R) -> String,
) -> Result<R, CliError>
where
    R: Default,
    F: FnMut(pb::ListInventoryRequest) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let mut out = R::default();
    let mut req = base;
    // 1000 pages of 1000: more than any cluster the manager holds.
    for _ in 0..1000 {
        let page = call(req.clone())
            .await
            .map_err(rpc("listing the inventory"))?;
        let next = merge(&mut out, page.into_inner());
        if next.is_empty() {
            break;
        }
        req.page_token = next;
    }
    Ok(out)
}

fn emit<T: Serialize>(
    value: &T,
    format: Format,
    table: impl FnOnce(bool, bool) -> String,
) -> Result<(), CliError> {
    match format.machine() {
        Some(m) => print!("{}", output::render(value, m)?),
        None => print!("{}", table(format == Format::Wide, term::colour_stdout())),
    }
    Ok(())
}

/// `tfctl pods|services|nodes|namespaces --cluster C [-n NS] [--node N]`.
pub async fn inventory(
    clients: &mut Clients,
    kind: Inventory,
    cluster: String,
    namespace: Option<String>,
    node: Option<String>,
    format: Format,
) -> Result<(), CliError> {
    let base = pb::ListInventoryRequest {
        cluster,
        namespace: namespace.unwrap_or_default(),
        node: node.unwrap_or_default(),
        page_size: 1000,
        page_token: String::new(),
    };
    let c = &clients.clusters;
    // One listing: every page of `$method`, its `$field` items, printed by `$table`.
    macro_rules! listing {
        ($method:ident, $resp:ty, $field:ident, $table:path) => {{
            let r = all_pages(
                base,
                |q| {
                    let mut c = c.clone();
                    async move { c.$method(q).await }
                },
                |o: &mut $resp, p| {
                    o.$field.extend(p.$field);
                    p.next_page_token
                },
            )
            .await?;
            emit(&r, format, |w, col| $table(&r.$field, w, col))
        }};
    }
    match kind {
        Inventory::Pods => listing!(list_pods, pb::ListPodsResponse, pods, tables::pods),
        Inventory::Services => {
            listing!(
                list_services,
                pb::ListServicesResponse,
                services,
                tables::services
            )
        }
        Inventory::Nodes => listing!(list_nodes, pb::ListNodesResponse, nodes, tables::nodes),
        Inventory::Namespaces => listing!(
            list_namespaces,
            pb::ListNamespacesResponse,
            namespaces,
            tables::namespaces
        ),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<String>,
}

/// `tfctl version`: the client's version, and the manager's unless `clients` is `None`
/// (`--client`).
pub async fn version(clients: Option<&mut Clients>, format: Format) -> Result<(), CliError> {
    let server_version = match clients {
        Some(c) => Some(
            c.clusters
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .map_err(rpc("asking the manager its version"))?
                .into_inner()
                .manager_version,
        )
        .map(|v| {
            if v.is_empty() {
                "unknown (the manager does not report one)".into()
            } else {
                v
            }
        }),
        None => None,
    };
    let v = Versions {
        client_version: env!("CARGO_PKG_VERSION"),
        server_version,
    };
    match format.machine() {
        Some(m) => print!("{}", output::render(&v, m)?),
        None => {
            println!("Client Version: {}", v.client_version);
            if let Some(s) = &v.server_version {
                println!("Server Version: {s}");
            }
        }
    }
    Ok(())
}
