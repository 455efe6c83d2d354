//! Test fixtures for disklock, never part of a shipped program:
//! - [`faketree`]: sysfs, `/dev` and udev database trees under a directory, which then
//!   serves as a `disklock_naming::SysRoot`;
//! - [`sim`]: a simulated logical unit with SPC-4 persistent-reservation rules, reached
//!   through any number of simulated I_T nexuses.

#![forbid(unsafe_code)]

pub mod faketree;
pub mod sim;
