//! The lab: many Kubernetes-like clusters on one machine, each Node a network namespace with its
//! own userspace Open vSwitch, each Pod a network namespace with a veth into its Node's `br-int`.
//!
//! ```text
//!  topology.yaml ──topology──▶ Topology ──lab::up──┬─▶ node:  netns + ovsdb-server + ovs-vswitchd
//!                                                  │          br-int (antrea-gw0, antrea-tun0),
//!                                                  │          br-phy on the cluster's underlay
//!                                                  ├─▶ node:  Pod netns, veth into br-int
//!                                                  ├─▶ kubeapi: `traceflow-lab serve-api` per cluster
//!                                                  └─▶ procs: manager, adapters, agents (detached)
//!  state.json (lab::state) records every namespace and process, so `down` removes all of it.
//! ```
//!
//! Contracts with the other binaries: `docs/contracts.md`.

pub mod client;
pub mod kubeapi;
pub mod lab;
pub mod node;
pub mod procs;
pub mod topology;
