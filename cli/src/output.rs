//! What tfctl prints: antctl's traceflow output object (reference §5) — `name`, `phase`,
//! `reason`, `source`, `destination`, `results`, `capturedPacket` — plus ours: `cluster`, `uid`,
//! `traceId` (injected) or `dataplaneTag` (live traffic), `startTimeMicros`, `endTimeMicros`. Results and packets are proto3 JSON (pbjson):
//! Antrea's field names, enums as names, 64-bit integers as strings.

use serde::Serialize;
use traceflow_proto::v1 as pb;

/// `-o` values: `table` (default) and `wide` for people, `yaml` and `json` for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    /// The table with every column.
    Wide,
    Yaml,
    Json,
}

impl Format {
    /// The machine format, or `None` for the human tables.
    pub fn machine(self) -> Option<Machine> {
        match self {
            Format::Table | Format::Wide => None,
            Format::Yaml => Some(Machine::Yaml),
            Format::Json => Some(Machine::Json),
        }
    }
}

/// The serialized formats; their output is a contract scripts rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Yaml,
    Json,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceOutput<'a> {
    pub name: &'a str,
    pub cluster: &'a str,
    pub uid: &'a str,
    pub phase: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
    pub source: String,
    pub destination: String,
    pub results: &'a [pb::NodeResult],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured_packet: Option<&'a pb::Packet>,
    #[serde(skip_serializing_if = "is_zero")]
    pub trace_id: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub dataplane_tag: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub start_time_micros: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub end_time_micros: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn micros(v: i64) -> String {
    if v == 0 { String::new() } else { v.to_string() }
}

/// The phase name as antctl prints it (`Running`, `Succeeded`, ...).
pub fn phase_name(status: Option<&pb::TraceflowStatus>) -> &'static str {
    let phase = status.map_or(0, |s| s.phase);
    pb::TraceflowPhase::try_from(phase).map_or("", |p| match p {
        pb::TraceflowPhase::PhaseUnspecified => "",
        other => other.as_str_name(),
    })
}

/// `ns/pod` (antctl prints it even when empty) or the source IP.
pub fn source_text(spec: Option<&pb::TraceflowSpec>) -> String {
    let s = spec.and_then(|s| s.source.clone()).unwrap_or_default();
    if s.pod.is_empty() && !s.ip.is_empty() {
        s.ip
    } else {
        format!("{}/{}", s.namespace, s.pod)
    }
}

/// The destination IP, `ns/pod` or `ns/service`.
pub fn destination_text(spec: Option<&pb::TraceflowSpec>) -> String {
    let d = spec.and_then(|s| s.destination.clone()).unwrap_or_default();
    if !d.ip.is_empty() {
        d.ip
    } else if !d.pod.is_empty() {
        format!("{}/{}", d.namespace, d.pod)
    } else if !d.service.is_empty() {
        format!("{}/{}", d.namespace, d.service)
    } else {
        String::new()
    }
}

pub fn trace_output(t: &pb::Traceflow) -> TraceOutput<'_> {
    let status = t.status.as_ref();
    TraceOutput {
        name: &t.name,
        cluster: &t.cluster,
        uid: &t.uid,
        phase: phase_name(status),
        reason: status.map_or("", |s| s.reason.as_str()),
        source: source_text(t.spec.as_ref()),
        destination: destination_text(t.spec.as_ref()),
        results: status.map_or(&[], |s| s.results.as_slice()),
        captured_packet: status.and_then(|s| s.captured_packet.as_ref()),
        trace_id: status.map_or(0, |s| s.trace_id),
        dataplane_tag: status.map_or(0, |s| u32::try_from(s.dataplane_tag).unwrap_or(0)),
        start_time_micros: micros(status.map_or(0, |s| s.start_time_micros)),
        end_time_micros: micros(status.map_or(0, |s| s.end_time_micros)),
    }
}

/// Serializes `value` as 2-space JSON or YAML, newline-terminated.
pub fn render<T: Serialize>(value: &T, format: Machine) -> Result<String, serde_json::Error> {
    match format {
        Machine::Json => serde_json::to_string_pretty(value).map(|s| s + "\n"),
        Machine::Yaml => serde_yaml::to_string(value).map_err(serde::ser::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace() -> pb::Traceflow {
        pb::Traceflow {
            uid: "u".into(),
            name: "p0-to-p1-abcdefgh".into(),
            cluster: "c1".into(),
            spec: Some(pb::TraceflowSpec {
                source: Some(pb::Source {
                    namespace: "default".into(),
                    pod: "p0".into(),
                    ip: String::new(),
                }),
                destination: Some(pb::Destination {
                    namespace: "web".into(),
                    service: "api".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Succeeded as i32,
                results: vec![pb::NodeResult {
                    node: "n1".into(),
                    role: "sender".into(),
                    timestamp: 1,
                    direction: pb::Direction::Forward as i32,
                    observations: vec![pb::Observation {
                        component: pb::Component::Lb as i32,
                        action: pb::Action::Forwarded as i32,
                        translated_dst_ip: "10.0.0.2".into(),
                        sequence: 1,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn json_has_antctl_keys_and_antrea_field_names() -> Result<(), serde_json::Error> {
        let t = trace();
        let v: serde_json::Value =
            serde_json::from_str(&render(&trace_output(&t), Machine::Json)?)?;
        assert_eq!(v["phase"], "Succeeded");
        assert_eq!(v["source"], "default/p0");
        assert_eq!(v["destination"], "web/api");
        let o = &v["results"][0]["observations"][0];
        assert_eq!(o["component"], "LB");
        assert_eq!(o["translatedDstIP"], "10.0.0.2");
        assert_eq!(v["results"][0]["role"], "sender");
        assert!(v.get("reason").is_none());
        Ok(())
    }

    #[test]
    fn yaml_starts_with_name_like_antctl() -> Result<(), serde_json::Error> {
        let t = trace();
        let y = render(&trace_output(&t), Machine::Yaml)?;
        assert!(y.starts_with("name: p0-to-p1-abcdefgh\n"), "{y}");
        assert!(y.contains("phase: Succeeded"));
        Ok(())
    }
}
