//! Generated code for gRPC package `traceflow.v1`, plus its proto3-JSON serde impls. The
//! services (tonic clients and servers) come with the default `grpc` feature.
//!
//! Nothing else lives here: conversion into domain types happens in each crate's edge.

/// Messages and services of `traceflow.v1`.
#[allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/traceflow.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/traceflow.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of every traceflow.v1 file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/traceflow_descriptor.bin"));
