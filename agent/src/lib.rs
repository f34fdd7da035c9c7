//! traceflow-agent
pub mod ovs;
pub mod pipeline;
pub mod ports;
