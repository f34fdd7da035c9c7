//! Antrea's tables, in Antrea's order, with Antrea's names (Antrea's OVS pipeline). The list lives in crate `traceflow-tables`, shared with the policy compiler;
//! this module re-exports it so the pipeline keeps saying `super::tables::Table`.

pub use traceflow_tables::{Miss, Table};
