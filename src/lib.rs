//! The `disklock` library: the lease daemon, its client and the commands of the `disklock`
//! binary (`src/main.rs`), which only parses, dispatches and exits.
//!
//! Resolution lives in `disklock-naming`, configuration in `disklock-conf`, SCSI in
//! `disklock-scsi`. This crate owns what none of those may: the lockspace files
//! ([`lockspace`]), persistent reservations over every path of a disk ([`pr`]), the daemon
//! and its socket ([`daemon`]), and the client ([`client`]). Fuzz targets and tests reach
//! the parsers here (the daemon's request decoder, lease file holder records).

#![forbid(unsafe_code)]

pub mod acquire;
pub mod cli;
pub mod client;
pub mod config_cmd;
pub mod daemon;
pub mod exit;
pub mod inspect;
pub mod lockspace;
pub mod lookup;
pub mod output;
pub mod pr;
pub mod pr_cmd;
pub mod run;
pub mod settings;
pub mod status;
