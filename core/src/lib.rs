//! The domain of a trace, free of transport: what a valid trace is and how one ends.
//!
//! ```text
//!  pb::TraceflowSpec ──TryFrom (spec)──▶ TraceSpec ──▶ manager API, adapter coordinator,
//!   (gRPC, CRD JSON,     field-named          │          Traceflow-resource path, tfctl
//!    tfctl flags)        Invalid errors       └──▶ to_proto(): the normalised wire form
//!
//!  phase: Pending → Running → Succeeded | Failed  (is_terminal)
//!  outcome: Antrea's success rule over NodeResults (is_succeeded)
//!  reasons: failure reasons in Antrea's words; naming: trace and cluster names; limits;
//!  counters: what agents count, by name
//! ```
//!
//! Every crate that accepts a trace converts through [`TraceSpec::try_from`] once, at its edge;
//! no other copy of these rules exists. Antrea's rules are cited from
//! `shared/reference/antrea-traceflow.md` by section.

pub mod counters;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod limits;
pub mod naming;
pub mod outcome;
pub mod phase;
pub mod reasons;
pub mod spec;

pub use spec::{Destination, Family, Invalid, PodRef, Source, TraceSpec, Transport};
