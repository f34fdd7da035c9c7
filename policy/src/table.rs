//! The node pipeline's tables, by Antrea's names and in Antrea's order (reference §4).
//!
//! The list lives in crate `traceflow-tables`, shared with the agent: a compiled rule names the
//! table it belongs in, and the agent encodes that as [`Table::id`], the position in
//! [`Table::ALL`].

pub use traceflow_tables::Table;
