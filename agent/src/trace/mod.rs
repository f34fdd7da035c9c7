//! Traces on this Node: build and inject trace packets ([`inject`], [`packet`]) and turn
//! trace packet-ins into observations ([`observe`]).

pub mod inject;
pub mod observe;
pub mod pace;
pub mod packet;

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use traceflow_proto::v1 as pb;

use crate::ovs::openflow::{OfError, PacketIn, Switch};
use crate::ports::NodePorts;

pub use inject::InjectError;
pub use observe::{NoPolicies, Observed, PolicyResolver};
pub use pace::Pacer;

/// How long an injection waits for a (re)connected br-int before failing.
const SWITCH_WAIT: Duration = Duration::from_secs(3);

/// Injects trace packets and interprets packet-ins for one Node. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    node: String,
    ports: watch::Receiver<NodePorts>,
    switch: watch::Receiver<Option<Switch>>,
    /// Resolves conjunction ids to policy rules (none: names stay empty).
    desired: Option<watch::Receiver<std::sync::Arc<crate::desired::DesiredState>>>,
    /// Keeps the trace packets in flight under OVS's packet-in queue ([`pace`]).
    pacer: Pacer,
}

impl Tracer {
    pub fn new(
        node: impl Into<String>,
        ports: watch::Receiver<NodePorts>,
        switch: watch::Receiver<Option<Switch>>,
    ) -> Self {
        Self {
            node: node.into(),
            ports,
            switch,
            desired: None,
            pacer: Pacer::default(),
        }
    }

    /// Names policies in observations from the desired state's rules (conj id → rule).
    pub fn with_desired(
        mut self,
        desired: watch::Receiver<std::sync::Arc<crate::desired::DesiredState>>,
    ) -> Self {
        self.desired = Some(desired);
        self
    }

    /// The Node name reported in every `NodeResult`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Builds the trace packet for `req` and injects it at the source Pod's port.
    ///
    /// Returns once OVS has processed the packet-out (a barrier follows it), so an OVS
    /// error surfaces here. Errors are reported to the adapter as `TraceFailure.reason`.
    pub async fn inject(&self, req: &pb::InjectPacket) -> Result<(), InjectError> {
        let injection = {
            let ports = self.ports.borrow();
            inject::resolve(req, &ports, rand::random::<u16>)?
        };
        let msg = injection.packet_out()?;
        let ticket = self.pacer.admit(req.trace_id).await;
        let result = self.send(msg).await;
        if result.is_err() {
            self.pacer.failed(req.trace_id, ticket);
        }
        result
    }

    async fn send(&self, msg: crate::ovs::openflow::Message) -> Result<(), InjectError> {
        let mut sw_rx = self.switch.clone();
        let sw = tokio::time::timeout(SWITCH_WAIT, sw_rx.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|s| s.clone()))
            .ok_or_else(|| InjectError::OpenFlow("OpenFlow connection to br-int is down".into()))?;
        sw.transact(std::slice::from_ref(&msg))
            .await
            .map_err(|e: OfError| {
                InjectError::OpenFlow(format!("failed to inject the packet: {e}"))
            })
    }

    /// The observations for a packet-in, or `None` if it is not a trace packet.
    pub fn observe(&self, pin: &PacketIn) -> Option<Observed> {
        let o = self.observe_only(pin);
        if let Some(o) = &o {
            self.pacer.seen(o.trace_id);
        }
        o
    }

    fn observe_only(&self, pin: &PacketIn) -> Option<Observed> {
        let ports = self.ports.borrow();
        match &self.desired {
            Some(d) => {
                let d = d.borrow().clone();
                observe::observe(pin, &ports, &self.node, SystemTime::now(), &*d)
            }
            None => observe::observe(pin, &ports, &self.node, SystemTime::now(), &NoPolicies),
        }
    }
}
