//! Generates the traceflow.v1 messages and services, their proto3-JSON serde impls (pbjson,
//! honouring `json_name`), and the file descriptor set served by gRPC reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "traceflow/v1/traceflow.proto",
    "traceflow/v1/fleet.proto",
    "traceflow/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = out.join("traceflow_descriptor.bin");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Services only with the `grpc` feature: without it no generated line names tonic.
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(PROTOS, &["."])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .build(&[".traceflow.v1"])?;
    Ok(())
}
