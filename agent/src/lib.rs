//! traceflow-agent
pub mod ovs;
