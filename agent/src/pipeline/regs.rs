//! Register layout, Antrea's (pkg/agent/openflow/fields.go): observations read the same bits.

/// reg0[0..3] `PktSourceField`.
pub const PKT_SOURCE_MASK: u32 = 0x0000_000f;
pub const FROM_TUNNEL: u32 = 1;
pub const FROM_GATEWAY: u32 = 2;
pub const FROM_POD: u32 = 3;

/// reg0 bit 8 `OFPortFoundRegMark`.
pub const OFPORT_FOUND_MARK: u32 = 1 << 8;
/// reg0 bit 9 `RewriteMACRegMark`: the packet is routed, L3Forwarding rewrites its MACs.
pub const REWRITE_MAC_MARK: u32 = 1 << 9;
/// reg0 bit 10 `APDenyRegMark`: an Antrea-native deny/reject rule matched (reg3 = its conj id).
pub const AP_DENY_MARK: u32 = 1 << 10;
/// reg0[11..12] `OutputRegField`; value 1 = `OutputToOFPortRegMark`.
pub const OUTPUT_MODE_MASK: u32 = 0b11 << 11;
pub const OUTPUT_TO_OFPORT_MARK: u32 = 1 << 11;
/// reg0 bit 19 `RemoteSNATRegMark`.
pub const REMOTE_SNAT_MARK: u32 = 1 << 19;

/// reg0 bit 30 (ours, unused by Antrea): the packet was injected by this agent's packet-out.
/// Registers of a packet received on a port start at zero, so no Pod can set it; the
/// Classifier clears the trace DSCP of a Pod packet without it (a forged trace packet).
pub const INJECTED_MARK: u32 = 1 << 30;

/// ct_mark bit 31 (ours, unused by Antrea): the connection was created by a trace packet.
/// The policy tables' established/related bypass admits only trace packets on such a
/// connection, so a trace never opens a path for real traffic (the reply of a UDP trace, say);
/// the agent flushes the entries it saw created when the trace ends.
pub const TRACE_CT_MARK: u32 = 1 << 31;

/// What L2ForwardingCalc writes into reg0 together with the target port.
pub const OUTPUT_TO_OFPORT_MARKS: u32 = OFPORT_FOUND_MARK | OUTPUT_TO_OFPORT_MARK;
pub const OUTPUT_MARKS_MASK: u32 = OFPORT_FOUND_MARK | OUTPUT_MODE_MASK;

/// reg1 `TargetOFPortField`.
pub const TARGET_OFPORT_REG: u8 = 1;
/// reg3 `APConjIDField`.
pub const AP_CONJ_ID_REG: u8 = 3;
/// reg5 `TFEgressConjIDField`.
pub const TF_EGRESS_CONJ_ID_REG: u8 = 5;
/// reg6 `TFIngressConjIDField`.
pub const TF_INGRESS_CONJ_ID_REG: u8 = 6;
