//! traceflow-agent
pub mod ovs;
pub mod pipeline;
pub mod ports;
pub mod runtime;
pub mod trace;
