//! VPD pages read from a real device, with what the real tools printed for it.
//!
//! Source: `naming/tests/fixtures/guest-capture.txt`, a vm-harness capture — tgt 1.0.85 LUN 1
//! (`scsi_id=disklock-lun-0001`, `scsi_sn=DLSAN0001`, vendor VMHARN, product SANLUN) seen by a
//! Debian 6.1 guest through QEMU 7.2 virtio-scsi `scsi-block` over iSCSI. In that guest
//! `/lib/udev/scsi_id --whitelisted --replace-whitespace` printed
//! `3600000000000000d00000c0000000001` and sysfs `wwid` read `naa.600000000000000d00000c0000000001`.

use disklock_scsi::vpd::{self, SysfsWwid};

const PG83: &[u8] = &[
    0x00, 0x83, 0x00, 0x48, 0x02, 0x01, 0x00, 0x24, b'd', b'i', b's', b'k', b'l', b'o', b'c', b'k',
    b'-', b'l', b'u', b'n', b'-', b'0', b'0', b'0', b'1', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0x01, 0x03, 0x00, 0x08, 0x30, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01,
    0x03, 0x00, 0x10, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x00, 0x0c, 0x00, 0x00,
    0x00, 0x00, 0x01,
];

fn pg80() -> Vec<u8> {
    let mut p = vec![0x00, 0x80, 0x00, 0x24];
    p.extend_from_slice(format!("{:>36}", "DLSAN0001").as_bytes());
    p
}

#[test]
fn tgt_lun_wwid_matches_scsi_id() {
    assert_eq!(
        vpd::scsi_id_wwid(Some(PG83), Some(&pg80()), b"VMHARN  ", b"SANLUN          ").as_deref(),
        Some("3600000000000000d00000c0000000001")
    );
}

#[test]
fn tgt_lun_designators() {
    let d = vpd::device_identification(PG83).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0].value.len(), 36);
    assert!(d[0].value.starts_with(b"disklock-lun-0001\0"));
    assert_eq!(d[1].naa_type(), Some(3));
    assert_eq!(d[2].naa_type(), Some(6));
    assert_eq!(d[2].hex(), "600000000000000d00000c0000000001");
}

#[test]
fn sysfs_wwid_converts_to_scsi_id_form() {
    let w = SysfsWwid::parse(b"naa.600000000000000d00000c0000000001\n").unwrap();
    assert_eq!(
        w.to_scsi_id().as_deref(),
        Some("3600000000000000d00000c0000000001")
    );
}

#[test]
fn without_naa_the_t10_designator_stops_at_its_first_nul() {
    // The same page with only its T10 vendor designator: scsi_id copies the ASCII value up to
    // the NUL that tgt pads it with.
    let mut p = PG83[..44].to_vec();
    p[3] = 40;
    assert_eq!(
        vpd::scsi_id_wwid(Some(&p), None, b"VMHARN  ", b"SANLUN          ").as_deref(),
        Some("1disklock-lun-0001")
    );
    // With no 0x83 identifier at all, the 0x80 serial form: S + vendor + model + serial,
    // whitespace runs collapsed to one underscore.
    let empty = [0x00, 0x83, 0x00, 0x00];
    assert_eq!(
        vpd::scsi_id_wwid(
            Some(&empty),
            Some(&pg80()),
            b"VMHARN  ",
            b"SANLUN          "
        )
        .as_deref(),
        Some("SVMHARN_SANLUN_DLSAN0001")
    );
}
