//! End-to-end tests of the real traceflow-manager binary over loopback with real mTLS.

mod cli;
mod common;
mod console;
mod datadir;
mod fleet;
mod grpcurl;
mod hostile;
mod registration;
mod restart;
mod security;
mod traces;
mod web;
