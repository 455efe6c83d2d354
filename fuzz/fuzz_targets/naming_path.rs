//! Path handling of the resolver on a small fake tree with links, loops, files and
//! directories: arbitrary bytes as a path never panic, and anything that resolves has a valid
//! key and a canonical path inside the root.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use disklock_testkit::faketree::TreeBuilder;
use disklock_naming::{DiskKey, Resolver, Source, SysRoot};
use libfuzzer_sys::fuzz_target;

fn resolver() -> &'static Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    R.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("disklock-fuzz-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let b = TreeBuilder::new(&dir);
        b.file("/var/lib/images/a.img", b"").unwrap();
        b.link("/img", "/var/lib/images").unwrap();
        b.link("/dev/loop1", "loop2").unwrap();
        b.link("/dev/loop2", "/dev/loop1").unwrap();
        b.link("/dev/disk/by-id/broken", "../../nothing").unwrap();
        b.link("/dev/disk/by-id/up", "../../../../../..").unwrap();
        b.dir("/sys/dev/block").unwrap();
        Resolver::new(SysRoot::new(&dir), &Source::DEFAULT_ORDER).with_vpd_fallback(None)
    })
}

fuzz_target!(|data: &[u8]| {
    let r = resolver();
    let input = OsStr::from_bytes(data);
    if let Ok(res) = r.resolve_path(input, Path::new("/dev")) {
        assert!(res.path.is_absolute());
        assert!(DiskKey::new(res.key.as_str()).is_ok());
    }
});
