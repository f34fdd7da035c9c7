//! A small Kubernetes API server for one lab cluster.
pub mod resources;
