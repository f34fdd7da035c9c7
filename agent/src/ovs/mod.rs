//! Everything that talks to Open vSwitch: OpenFlow on `<rundir>/<bridge>.mgmt` and OVSDB on
//! `<rundir>/db.sock`.

pub mod openflow;
pub mod ovsdb;
