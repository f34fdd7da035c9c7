//! `ClusterService`: clusters with health, their inventory, bootstrap tokens, deregistration.
//!
//! Roles: view for listings, admin for CreateBootstrapToken and DeregisterCluster.
//! Inventory listings are ordered by (cluster, key) and paged with an opaque token (the last
//! key returned).

use std::{collections::BTreeMap, ops::Bound, time::Duration};

use tonic::{Request, Response, Status};
use traceflow_core::{
    Invalid,
    limits::{MAX_LABEL_LEN, MAX_PAGE_TOKEN_LEN, MAX_SUBDOMAIN_LEN, check_len},
    naming,
};
use traceflow_proto::v1 as pb;

use super::{
    Ctx,
    access::caller,
    error::{ApiError, ApiResult},
    page_size,
};
use crate::{
    accounts,
    fleet::ClusterInventory,
    store::{AuditEvent, ClusterRecord, now_micros},
};

/// The ClusterService implementation.
#[derive(Clone, Debug)]
pub struct ClusterSvc {
    pub ctx: Ctx,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

/// Which inventory listing.
#[derive(Clone, Copy)]
enum Kind {
    Nodes,
    Namespaces,
    Pods,
    Services,
}

enum Item {
    Node(pb::InventoryNode),
    Namespace(pb::InventoryNamespace),
    Pod(pb::InventoryPod),
    Service(pb::InventoryService),
}

/// The entries of `m` after key `after` (all when `None`), in key order.
fn after<'a, V>(
    m: &'a BTreeMap<String, V>,
    after: Option<&'a str>,
) -> Box<dyn Iterator<Item = (&'a String, &'a V)> + 'a> {
    match after {
        Some(a) => Box::new(m.range::<str, _>((Bound::Excluded(a), Bound::Unbounded))),
        None => Box::new(m.iter()),
    }
}

/// The listing's objects of `inv` with keys after `from`, in key order. Lazy: only the objects
/// a page takes are cloned (the caller holds the fleet's lock meanwhile).
fn items<'a>(
    kind: Kind,
    req: &'a pb::ListInventoryRequest,
    inv: &'a ClusterInventory,
    from: Option<&'a str>,
) -> Box<dyn Iterator<Item = (&'a String, Item)> + 'a> {
    let ns_ok = |ns: &str| req.namespace.is_empty() || req.namespace == ns;
    match kind {
        Kind::Nodes => Box::new(
            after(&inv.nodes, from)
                .filter(|(name, _)| req.node.is_empty() || req.node == **name)
                .map(|(k, v)| (k, Item::Node(v.clone()))),
        ),
        Kind::Namespaces => Box::new(
            after(&inv.namespaces, from)
                .filter(move |(name, _)| ns_ok(name))
                .map(|(k, v)| (k, Item::Namespace(v.clone()))),
        ),
        Kind::Pods => Box::new(
            after(&inv.pods, from)
                .filter(move |(_, p)| {
                    ns_ok(&p.namespace) && (req.node.is_empty() || req.node == p.node)
                })
                .map(|(k, v)| (k, Item::Pod(v.clone()))),
        ),
        Kind::Services => Box::new(
            after(&inv.services, from)
                .filter(move |(_, s)| ns_ok(&s.namespace))
                .map(|(k, v)| (k, Item::Service(v.clone()))),
        ),
    }
}

impl ClusterSvc {
    fn to_pb(&self, rec: &ClusterRecord) -> pb::Cluster {
        let live = self.ctx.fleet.status(&rec.name);
        pb::Cluster {
            name: rec.name.clone(),
            health: live.health as i32,
            connected_agents: live.connected_agents,
            expected_agents: live.expected_agents,
            registered_micros: rec.registered_micros,
            last_heartbeat_micros: live.last_heartbeat_micros.max(rec.last_heartbeat_micros),
            certificate_serial: rec.certificate_serial.clone(),
            inventory: Some(self.ctx.fleet.inventory_counts(&rec.name)),
            reason: self.ctx.fleet.stream_error(&rec.name),
        }
    }

    /// One page of an inventory listing: items and the next page token.
    fn page(&self, kind: Kind, req: &pb::ListInventoryRequest) -> ApiResult<(Vec<Item>, String)> {
        if !req.cluster.is_empty() {
            naming::check_cluster("cluster", &req.cluster)?;
        }
        check_len("namespace", &req.namespace, MAX_LABEL_LEN)?;
        check_len("node", &req.node, MAX_SUBDOMAIN_LEN)?;
        check_len(
            "page_token",
            &req.page_token,
            MAX_PAGE_TOKEN_LEN + 2 * MAX_SUBDOMAIN_LEN,
        )?;
        if !req.cluster.is_empty() && self.ctx.store.cluster(&req.cluster)?.is_none() {
            return Err(ApiError::NotFound(format!(
                "cluster {:?} is not registered",
                req.cluster
            )));
        }
        if req.page_size < 0 {
            return Err(invalid("page_size", "must not be negative"));
        }
        let after = if req.page_token.is_empty() {
            None
        } else {
            let bytes = hex::decode(&req.page_token)
                .map_err(|_| invalid("page_token", "is not a token returned by this listing"))?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        let size = page_size(req.page_size);
        // The token is "<cluster>\0<key>" of the last item sent; \0 sorts before any name
        // character, so (cluster, key) order is the order of these strings.
        let resume = after
            .as_deref()
            .map(|a| a.split_once('\u{0}').unwrap_or((a, "")));
        let (items, next) = self.ctx.fleet.read_inventories(&req.cluster, |invs| {
            let mut out = Vec::new();
            let mut next = String::new();
            'outer: for (cluster, inv) in invs {
                let from = match resume {
                    Some((c, _)) if cluster.as_str() < c => continue,
                    Some((c, key)) if cluster.as_str() == c => Some(key),
                    _ => None,
                };
                for (key, item) in items(kind, req, inv, from) {
                    let full = format!("{cluster}\u{0}{key}");
                    if out.len() == size {
                        next = out_last_key(&out);
                        break 'outer;
                    }
                    out.push((full, item));
                }
            }
            (out, next)
        });
        Ok((items.into_iter().map(|(_, i)| i).collect(), next))
    }

    async fn create_token(
        &self,
        actor: &str,
        req: pb::CreateBootstrapTokenRequest,
    ) -> ApiResult<pb::CreateBootstrapTokenResponse> {
        if req.ttl_seconds < 0 {
            return Err(invalid(
                "ttl_seconds",
                "must not be negative (0 means one hour)",
            ));
        }
        let ttl = if req.ttl_seconds == 0 {
            accounts::DEFAULT_TOKEN_TTL
        } else {
            Duration::from_secs(req.ttl_seconds as u64)
        };
        let (token, expires) =
            accounts::mint_bootstrap_token(&self.ctx.store, &req.cluster, ttl, actor)?;
        self.ctx.store.durable().await?;
        tracing::info!(cluster = %req.cluster, actor, "bootstrap token minted");
        Ok(pb::CreateBootstrapTokenResponse {
            token,
            expires_micros: expires,
        })
    }

    async fn deregister(&self, actor: &str, name: &str) -> ApiResult<()> {
        if name.is_empty() {
            return Err(invalid("name", "is required"));
        }
        naming::check_cluster("name", name)?;
        if !self.ctx.store.delete_cluster(name)? {
            return Err(ApiError::NotFound(format!(
                "cluster {name:?} is not registered"
            )));
        }
        self.ctx.store.delete_inventory(name)?;
        self.ctx.store.audit(&AuditEvent {
            micros: now_micros(),
            actor: actor.to_string(),
            action: "deregister".into(),
            subject: name.to_string(),
            detail: "certificate revoked, stream closed, inventory removed".into(),
        })?;
        self.ctx.store.durable().await?;
        self.ctx.fleet.remove_cluster(
            name,
            Status::unauthenticated(format!(
                "cluster {name:?} was deregistered; its certificate is revoked"
            )),
        );
        self.ctx
            .hub
            .fail_cluster_inflight(name, &format!("cluster {name} was deregistered"))
            .await;
        tracing::info!(cluster = name, actor, "cluster deregistered");
        Ok(())
    }
}

fn out_last_key(out: &[(String, Item)]) -> String {
    out.last()
        .map(|(k, _)| hex::encode(k.as_bytes()))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterSvc {
    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        caller(&request)?;
        let pb::ListClustersRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        if size < 0 {
            return Err(invalid("page_size", "must not be negative").into());
        }
        // A token is the last cluster name of the previous page.
        if page_token.len() > traceflow_core::limits::MAX_LABEL_LEN {
            return Err(invalid("page_token", "is not a token returned by ListClusters").into());
        }
        let limit = if size == 0 {
            usize::MAX
        } else {
            page_size(size)
        };
        let (page, more) = self
            .ctx
            .store
            .clusters_page(&page_token, limit)
            .map_err(ApiError::from)?;
        let next_page_token = match page.last() {
            Some(last) if more => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListClustersResponse {
            clusters: page.iter().map(|c| self.to_pb(c)).collect(),
            manager_version: env!("CARGO_PKG_VERSION").to_string(),
            next_page_token,
        }))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        caller(&request)?;
        let name = request.into_inner().name;
        naming::check_cluster("name", &name).map_err(ApiError::from)?;
        let rec = self
            .ctx
            .store
            .cluster(&name)
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("cluster {name:?} is not registered")))?;
        Ok(Response::new(self.to_pb(&rec)))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        caller(&request)?;
        let (items, next_page_token) = self.page(Kind::Nodes, request.get_ref())?;
        let nodes = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Node(n) => Some(n),
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            next_page_token,
        }))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        caller(&request)?;
        let (items, next_page_token) = self.page(Kind::Namespaces, request.get_ref())?;
        let namespaces = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Namespace(n) => Some(n),
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces,
            next_page_token,
        }))
    }

    async fn list_pods(
        &self,
        request: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        caller(&request)?;
        let (items, next_page_token) = self.page(Kind::Pods, request.get_ref())?;
        let pods = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Pod(n) => Some(n),
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::ListPodsResponse {
            pods,
            next_page_token,
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        caller(&request)?;
        let (items, next_page_token) = self.page(Kind::Services, request.get_ref())?;
        let services = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Service(n) => Some(n),
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::ListServicesResponse {
            services,
            next_page_token,
        }))
    }

    async fn create_bootstrap_token(
        &self,
        request: Request<pb::CreateBootstrapTokenRequest>,
    ) -> Result<Response<pb::CreateBootstrapTokenResponse>, Status> {
        let who = caller(&request)?;
        Ok(Response::new(
            self.create_token(who.name(), request.into_inner()).await?,
        ))
    }

    async fn deregister_cluster(
        &self,
        request: Request<pb::DeregisterClusterRequest>,
    ) -> Result<Response<pb::DeregisterClusterResponse>, Status> {
        let who = caller(&request)?;
        self.deregister(who.name(), &request.into_inner().name)
            .await?;
        Ok(Response::new(pb::DeregisterClusterResponse {}))
    }
}
