//! Fuzz the libvirt plugin's `qemu-disklock.conf` reader: any text gives a configuration or
//! an error naming the file, never a panic; a configuration keeps its invariants.

#![no_main]

use std::path::Path;

use disklock_libvirt::config::{MAX_TIMEOUT_SECS, PluginConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/libvirt/qemu-disklock.conf");
    match PluginConfig::parse(path, text) {
        Ok(c) => {
            assert!(c.socket.is_absolute());
            assert!((1..=MAX_TIMEOUT_SECS).contains(&c.timeout.as_secs()));
        }
        Err(e) => assert!(e.to_string().starts_with("/etc/libvirt/qemu-disklock.conf")),
    }
});
