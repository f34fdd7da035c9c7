//! How many packet-ins the packet-in meters dropped, read from Open vSwitch.
//!
//! A trace packet-in dropped at [`PACKET_IN_METER`] is a Node's report that never comes: its
//! trace ends by timeout with nothing else to show why. The counts become the agent counters
//! `trace_meter_drops` and `reject_meter_drops` (served by the manager per cluster and Node).
//! The counting meter [`FORGED_TRACE_METER`] gives `forged_trace_packets`: what entered
//! br-int claiming a trace it was not part of.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{FORGED_TRACE_METER, LIVE_PACKET_IN_METER, PACKET_IN_METER, REJECT_PACKET_IN_METER};
use crate::metrics;
use crate::ovs::openflow::{Message, OfError, Switch};

/// How often the meters' counters are read while br-int is connected.
pub const POLL: Duration = Duration::from_secs(2);

/// Turns a meter's drop count as OVS reports it into increments of a monotonic counter. OVS
/// counts from zero again when the meter is installed anew (ovs-vswitchd restarted): a count
/// below the last one is all new.
#[derive(Debug, Default)]
pub struct DropDeltas {
    last: HashMap<u32, u64>,
}

impl DropDeltas {
    /// What meter `meter_id`'s drop count `now` adds since the last reading.
    pub fn delta(&mut self, meter_id: u32, now: u64) -> u64 {
        let before = self.last.insert(meter_id, now).unwrap_or(0);
        if now >= before { now - before } else { now }
    }
}

/// Packets meter `meter_id` of `sw` dropped (the sum over its drop bands), as OVS counts them.
pub async fn read(sw: &Switch, meter_id: u32) -> Result<u64, OfError> {
    stats(sw, meter_id)
        .await
        .map(|m| m.iter().flat_map(|m| m.band_packet_counts.iter()).sum())
}

/// Packets that entered meter `meter_id` of `sw`, as OVS counts them.
pub async fn read_entered(sw: &Switch, meter_id: u32) -> Result<u64, OfError> {
    stats(sw, meter_id)
        .await
        .map(|m| m.iter().map(|m| m.packet_in_count).sum())
}

async fn stats(
    sw: &Switch,
    meter_id: u32,
) -> Result<Vec<crate::ovs::openflow::message::MeterStats>, OfError> {
    match sw.request(&Message::MeterStatsRequest { meter_id }).await? {
        Message::MeterStatsReply(meters) => Ok(meters
            .into_iter()
            .filter(|m| m.meter_id == meter_id)
            .collect()),
        other => Err(OfError::Protocol(format!(
            "meter stats answered with type {}",
            other.kind()
        ))),
    }
}

/// Reads both packet-in meters every [`POLL`] while `switch` is connected, adding what they
/// dropped to the agent's counters, until `shutdown`.
pub fn spawn(switch: watch::Receiver<Option<Switch>>, shutdown: CancellationToken) {
    const METERS: [(u32, &AtomicU64); 3] = [
        (PACKET_IN_METER, &metrics::TRACE_METER_DROPS),
        (REJECT_PACKET_IN_METER, &metrics::REJECT_METER_DROPS),
        (LIVE_PACKET_IN_METER, &metrics::LIVE_METER_DROPS),
    ];
    tokio::spawn(async move {
        let mut deltas = DropDeltas::default();
        let mut logged = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let Some(sw) = switch.borrow().clone() else {
                continue;
            };
            // The forged trace packets PipelineRootClassifier cleared (a counting meter).
            if let Ok(entered) = read_entered(&sw, FORGED_TRACE_METER).await {
                let new = deltas.delta(FORGED_TRACE_METER, entered);
                if new > 0 {
                    metrics::add(&metrics::FORGED_TRACE_PACKETS, new);
                    debug!(packets = new, "forged trace packets cleared at ingress");
                }
            }
            for (meter_id, counter) in METERS {
                match read(&sw, meter_id).await {
                    Ok(dropped) => {
                        let new = deltas.delta(meter_id, dropped);
                        if new > 0 {
                            metrics::add(counter, new);
                            if meter_id == PACKET_IN_METER {
                                warn!(
                                    dropped = new,
                                    "trace packet-ins dropped by the packet-in meter; their traces will time out"
                                );
                            }
                        }
                    }
                    // A switch without meters (the pipeline logged it when programming).
                    Err(error) if !logged => {
                        debug!(%error, meter_id, "cannot read the meter's counters");
                        logged = true;
                    }
                    Err(_) => {}
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::DropDeltas;

    #[test]
    fn deltas_grow_and_start_again_when_the_meter_is_new() {
        let mut d = DropDeltas::default();
        assert_eq!(d.delta(257, 0), 0);
        assert_eq!(d.delta(257, 7), 7);
        assert_eq!(d.delta(257, 7), 0);
        assert_eq!(d.delta(256, 3), 3, "meters are counted apart");
        assert_eq!(d.delta(257, 10), 3);
        // ovs-vswitchd restarted: its new meter counts from zero.
        assert_eq!(d.delta(257, 2), 2);
        assert_eq!(d.delta(257, 4), 2);
    }
}
