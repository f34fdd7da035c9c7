//! Everything that talks to Open vSwitch: OpenFlow on `<rundir>/<bridge>.mgmt`, OVSDB on
//! `<rundir>/db.sock`, and ovs-vswitchd's control socket for its conntrack table.

pub mod openflow;
pub mod ovsdb;
pub mod unixctl;
