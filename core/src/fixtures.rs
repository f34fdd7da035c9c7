//! The specs tests across the workspace start from, so each crate's tests do not spell them
//! out again. Compiled for this crate's tests and, in other crates, through the `fixtures`
//! feature their dev-dependencies enable.

use traceflow_proto::v1 as pb;

/// Pod `default/<src>` to Pod `default/<dst>`, everything else left to the defaults.
pub fn pod_to_pod(src: &str, dst: &str) -> pb::TraceflowSpec {
    pb::TraceflowSpec {
        source: Some(pb::Source {
            namespace: "default".into(),
            pod: src.into(),
            ip: String::new(),
        }),
        destination: Some(pb::Destination {
            namespace: "default".into(),
            pod: dst.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
