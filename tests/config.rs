//! `disklock config`: values in effect, with the file and line each came from.

use std::process::Command;

#[test]
fn shows_values_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let lockd = dir.path().join("qemu-lockd.conf");
    std::fs::write(
        &lockd,
        "# virtlockd's settings\nscsi_lockspace_dir = \"/srv/lockd/scsi\"\n",
    )
    .unwrap();
    let conf = dir.path().join("disklock.conf");
    std::fs::write(
        &conf,
        format!(
            "lvm_lockspace_dir = \"/srv/dl/lvm\"\n\nlockd_conf = \"{}\"\n",
            lockd.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--config")
        .arg(&conf)
        .args(["config", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |k: &str| {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .clone()
    };
    assert_eq!(get("lvm_lockspace_dir")["value"], "/srv/dl/lvm");
    assert_eq!(
        get("lvm_lockspace_dir")["origin"],
        format!("{}:1", conf.display())
    );
    assert_eq!(get("scsi_lockspace_dir")["value"], "/srv/lockd/scsi");
    assert_eq!(
        get("scsi_lockspace_dir")["origin"],
        format!("{}:2", lockd.display())
    );
    assert_eq!(get("auto_disk_leases")["origin"], "default");
    assert_eq!(v["files_read"].as_array().unwrap().len(), 2);
    // The table says the same for people.
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--config")
        .arg(&conf)
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("lvm_lockspace_dir"))
        .unwrap();
    assert!(
        line.contains("\"/srv/dl/lvm\"") && line.ends_with(&format!("{}:1", conf.display())),
        "{line}"
    );
}
