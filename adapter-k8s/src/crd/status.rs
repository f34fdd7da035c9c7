//! `TraceflowStatus` → the JSON of Antrea's CRD status (reference §1.3): proto3 JSON names,
//! but `startTime` as RFC 3339 and 64-bit integers as numbers (the CRD schema says integer).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use traceflow_proto::v1 as pb;

fn int64_fields_to_numbers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if matches!(
                    k.as_str(),
                    "timestamp" | "timestampMicros" | "startTimeMicros" | "endTimeMicros"
                ) {
                    if let Some(n) = item.as_str().and_then(|s| s.parse::<i64>().ok()) {
                        *item = json!(n);
                    }
                } else {
                    int64_fields_to_numbers(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(int64_fields_to_numbers),
        _ => {}
    }
}

/// The CR `status` object for a snapshot.
pub fn to_crd(status: &pb::TraceflowStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    int64_fields_to_numbers(&mut v);
    if let Value::Object(map) = &mut v {
        if status.start_time_micros > 0 {
            let t = UNIX_EPOCH
                + Duration::from_micros(u64::try_from(status.start_time_micros).unwrap_or(0));
            map.insert(
                "startTime".into(),
                json!(humantime::format_rfc3339_seconds(t).to_string()),
            );
        }
        // Antrea writes these even when zero / empty; a merge patch must also clear old values.
        map.entry("dataplaneTag").or_insert(json!(0));
        map.entry("reason").or_insert(json!(""));
        map.entry("results").or_insert(json!([]));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_matches_antreas_crd_shape() {
        let s = pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Succeeded as i32,
            start_time_micros: 1_700_000_000_000_000,
            trace_id: 5,
            results: vec![pb::NodeResult {
                node: "n1".into(),
                role: "sender".into(),
                timestamp: 1_700_000_000,
                observations: vec![pb::Observation {
                    component: pb::Component::Lb as i32,
                    action: pb::Action::Forwarded as i32,
                    translated_dst_ip: "10.0.0.2".into(),
                    timestamp_micros: 1_700_000_000_000_001,
                    sequence: 1,
                    ..Default::default()
                }],
                direction: pb::Direction::Forward as i32,
            }],
            ..Default::default()
        };
        let v = to_crd(&s);
        assert_eq!(v["phase"], "Succeeded");
        assert_eq!(v["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(v["results"][0]["timestamp"], 1_700_000_000);
        assert_eq!(v["results"][0]["observations"][0]["component"], "LB");
        assert_eq!(
            v["results"][0]["observations"][0]["translatedDstIP"],
            "10.0.0.2"
        );
        assert_eq!(
            v["results"][0]["observations"][0]["timestampMicros"],
            1_700_000_000_000_001_i64
        );
        assert_eq!(v["dataplaneTag"], 0);
        assert_eq!(v["traceId"], 5);
    }

    #[test]
    fn antrea_spec_json_decodes_into_the_proto_spec() -> Result<(), serde_json::Error> {
        let spec: pb::TraceflowSpec = serde_json::from_value(json!({
            "source": {"namespace": "default", "pod": "p0"},
            "destination": {"namespace": "web", "service": "api"},
            "packet": {"ipHeader": {"protocol": 6}, "transportHeader": {"tcp": {"dstPort": 80, "flags": 2}}},
            "timeout": 10
        }))?;
        assert_eq!(spec.destination.map(|d| d.service), Some("api".into()));
        let tcp = spec
            .packet
            .and_then(|p| p.transport_header)
            .and_then(|t| t.tcp);
        assert_eq!(tcp.map(|t| (t.dst_port, t.flags)), Some((80, Some(2))));
        assert_eq!(spec.timeout, 10);
        Ok(())
    }
}
