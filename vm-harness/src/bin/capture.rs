//! Capture real sysfs / udev / `/dev` data from a guest into the resolver's fixture.
//!
//! `capture [OUT]` boots one guest (see `disklock_vm_harness::capture::rig_builder`),
//! builds a multipath map, a partition, an LV, and writes the manifest to OUT (default
//! `naming/tests/fixtures/guest-capture.txt` in the workspace). It refuses to write a
//! manifest that misses any of the devices it set up.

use std::path::PathBuf;
use std::process::ExitCode;

use disklock_vm_harness::capture;

fn run(out: &PathBuf) -> disklock_vm_harness::Result<()> {
    let rig = capture::rig_builder().start()?;
    let scene = capture::prepare_scene(&rig)?;
    let m = capture::capture(rig.host(0), &capture::host_provenance(&rig))?;
    let text = m.render();
    if let Err(problems) = capture::check(&m, &scene, text.len()) {
        return Err(disklock_vm_harness::Error::Unexpected {
            host: rig.host(0).name().to_owned(),
            message: format!("the capture misses: {problems:?}"),
        });
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|source| disklock_vm_harness::Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    std::fs::write(out, &text).map_err(|source| disklock_vm_harness::Error::Io {
        context: format!("writing {}", out.display()),
        source,
    })?;
    eprintln!(
        "[vm] wrote {} ({} records, {} bytes)",
        out.display(),
        m.records.len(),
        text.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let out = std::env::args_os().nth(1).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../naming/tests/fixtures/guest-capture.txt")
        },
        PathBuf::from,
    );
    match run(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture: {e}");
            ExitCode::FAILURE
        }
    }
}
