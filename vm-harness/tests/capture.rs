//! The fixture capture: one host with udev, a multipath map, a partition, an LV, an NVMe
//! namespace and a virtio disk without serial; the manifest must describe all of them
//! and stay small. (The `capture` binary writes the same manifest to
//! `naming/tests/fixtures/guest-capture.txt`.)

#![cfg(disklock_vm)]

mod common;

use disklock_vm_harness::capture::{self, Manifest};
use disklock_vm_harness::{Result, timed};

#[test]
fn capture_describes_every_device_kind() -> Result<()> {
    let _t = common::TestTimer::start("capture_describes_every_device_kind");
    let rig = capture::rig_builder().start()?;
    let scene = timed("step build scene", || capture::prepare_scene(&rig))?;
    let m = timed("step capture", || {
        capture::capture(rig.host(0), &capture::host_provenance(&rig))
    })?;
    let text = m.render();
    disklock_vm_harness::note(format!(
        "manifest: {} records, {} bytes",
        m.records.len(),
        text.len()
    ));
    if let Err(problems) = capture::check(&m, &scene, text.len()) {
        panic!("capture is missing: {problems:#?}");
    }
    assert_eq!(
        Manifest::parse(&text)?.records,
        m.records,
        "render/parse round trip"
    );
    assert!(
        m.comments.iter().any(|c| c.starts_with("guest kernel ")),
        "provenance: {:?}",
        m.comments
    );
    Ok(())
}
