//! Build the guest image (or find it in the cache) and print its directory.
//!
//! `vm-image [--quiet]`: the last line of stdout is the image directory, suitable for
//! `DISKLOCK_VM_IMAGE`.

use disklock_vm_harness::{Image, Provenance, image};

fn main() -> std::process::ExitCode {
    let quiet = std::env::args().any(|a| a == "--quiet");
    let t = std::time::Instant::now();
    match Image::ensure(&image::cache_dir()) {
        Ok((img, how)) => {
            if !quiet {
                match how {
                    Provenance::Built(d) => {
                        eprintln!("[vm] image built in {:.1} s", d.as_secs_f64())
                    }
                    Provenance::Reused | Provenance::FromEnv => {
                        eprintln!(
                            "[vm] image reused (key check {:.1} s)",
                            t.elapsed().as_secs_f64()
                        );
                    }
                }
                eprintln!("[vm] kernel {}, key {}", img.kernel_release, img.key);
            }
            println!("{}", img.dir.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vm-image: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
