//! The fleet as the trace workflow sees it ([`crate::traces::workflow::ClusterLink`]):
//! registration from the store, inventories and adapter streams from the [`Fleet`].

use std::time::Duration;

use traceflow_core::PodRef;
use traceflow_proto::v1 as pb;
use traceflow_telemetry::ContextMap;

use super::Fleet;
use crate::{
    store::{Store, StoreError},
    traces::workflow::ClusterLink,
};

/// How long a `StartTrace` may wait for room in a cluster's stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Registered clusters (store) and their live streams (fleet). Cheap to clone.
#[derive(Clone, Debug)]
pub struct FleetLink {
    pub store: Store,
    pub fleet: Fleet,
}

impl ClusterLink for FleetLink {
    fn is_registered(&self, cluster: &str) -> Result<bool, StoreError> {
        Ok(self.store.cluster(cluster)?.is_some())
    }

    fn source_pod(&self, cluster: &str, pod: &PodRef) -> Option<Option<bool>> {
        self.fleet.with_inventory(cluster, |inv| {
            inv.synced
                .then(|| inv.pod(&pod.namespace, &pod.name).map(|p| p.host_network))
        })
    }

    fn check_connected(&self, cluster: &str) -> Result<(), String> {
        self.fleet
            .sender(cluster)
            .map(drop)
            .map_err(|why| why.reason(cluster))
    }

    async fn start(&self, trace: &pb::Traceflow, context: ContextMap) -> Result<(), String> {
        let not_connected = || traceflow_core::reasons::cluster_not_connected(&trace.cluster);
        let tx = self
            .fleet
            .sender(&trace.cluster)
            .map_err(|_| not_connected())?;
        let msg = pb::ManagerMessage {
            kind: Some(pb::manager_message::Kind::StartTrace(pb::StartTrace {
                trace: Some(trace.clone()),
                trace_context: context,
            })),
        };
        match tokio::time::timeout(SEND_TIMEOUT, tx.send(Ok(msg))).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(not_connected()),
        }
    }

    fn cancel(&self, cluster: &str, uid: &str) {
        if let Ok(tx) = self.fleet.sender(cluster) {
            let cancel = pb::ManagerMessage {
                kind: Some(pb::manager_message::Kind::CancelTrace(pb::CancelTrace {
                    uid: uid.to_string(),
                })),
            };
            let _ = tx.try_send(Ok(cancel));
        }
    }
}
