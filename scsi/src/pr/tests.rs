//! Tests of the persistent reservation codecs.
//!
//! The byte vectors are built to match what tgt 1.0.85 answered in test-rig.md §3 (read by a
//! libiscsi client, and by `sg_persist` inside a guest, §7.5) and the layouts of SPC-4 §6.15;
//! each test names its source.

use proptest::prelude::*;

use super::*;

/// READ KEYS / READ RESERVATION / READ FULL STATUS header.
fn header_bytes(generation: u32, body: &[u8]) -> Vec<u8> {
    let mut out = generation.to_be_bytes().to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn encode_keys(k: &Keys) -> Vec<u8> {
    let body: Vec<u8> = k.keys.iter().flat_map(|k| k.to_be_bytes()).collect();
    header_bytes(k.generation, &body)
}

fn encode_reservation(r: &Reservation) -> Vec<u8> {
    let body = match r.holder {
        None => Vec::new(),
        Some(h) => {
            let mut d = vec![0u8; 16];
            d[..8].copy_from_slice(&h.key.to_be_bytes());
            d[13] = (h.scope << 4) | h.kind.scsi_code();
            d
        }
    };
    header_bytes(r.generation, &body)
}

fn encode_capabilities(c: &Capabilities) -> Vec<u8> {
    let b2 = (u8::from(c.crh) << 4)
        | (u8::from(c.sip_c) << 3)
        | (u8::from(c.atp_c) << 2)
        | u8::from(c.ptpl_c);
    let b3 = (u8::from(c.tmv) << 7) | ((c.allow_commands & 7) << 4) | u8::from(c.ptpl_a);
    let [m0, m1] = c.raw_type_mask.to_be_bytes();
    vec![0, 8, b2, b3, m0, m1, 0, 0]
}

fn encode_full_status(s: &FullStatus) -> Vec<u8> {
    let mut body = Vec::new();
    for e in &s.entries {
        let tid = e.transport_id.to_bytes();
        let mut d = vec![0u8; 24];
        d[..8].copy_from_slice(&e.key.to_be_bytes());
        d[12] = (u8::from(e.all_tg_pt) << 1) | u8::from(e.holder);
        d[13] = (e.scope << 4) | e.kind.map_or(0, PrType::scsi_code);
        d[18..20].copy_from_slice(&e.relative_target_port.to_be_bytes());
        d[20..24].copy_from_slice(&u32::try_from(tid.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&d);
        body.extend_from_slice(&tid);
    }
    header_bytes(s.generation, &body)
}

// ---- keys and types ---------------------------------------------------------------------

#[test]
fn key_display_and_parse() {
    let k = ReservationKey(0xaaaa_0000_0000_0001);
    assert_eq!(k.to_string(), "0xaaaa000000000001");
    assert_eq!("0xaaaa000000000001".parse::<ReservationKey>(), Ok(k));
    assert_eq!("0XAAAA000000000001".parse::<ReservationKey>(), Ok(k));
    // fence_scsi's key for cluster "mycluster", node id 2 (prior-art.md §0.7).
    assert_eq!(
        "0x6c9d0002".parse::<ReservationKey>(),
        Ok(ReservationKey(0x6c9d_0002))
    );
    assert_eq!("0x1".parse::<ReservationKey>(), Ok(ReservationKey(1)));
    assert_eq!(
        "18446744073709551615".parse::<ReservationKey>(),
        Ok(ReservationKey(u64::MAX))
    );
    assert_eq!("0".parse::<ReservationKey>(), Ok(ReservationKey::ZERO));
    assert!(ReservationKey::ZERO.is_zero());
    assert!(!k.is_zero());
    for bad in [
        "",
        "0x",
        "0x00000000000000001", // 17 digits
        "0xg",
        "+5",
        "-1",
        " 1",
        "18446744073709551616",
        "1e3",
        "0x 1",
    ] {
        let err = bad.parse::<ReservationKey>().unwrap_err();
        assert_eq!(err.input, bad);
    }
    assert!(ReservationKey(1) < ReservationKey(2));
    assert_eq!(
        ReservationKey::from_be_bytes(k.to_be_bytes()),
        k,
        "wire round trip"
    );
}

#[test]
fn type_codes() {
    // prior-art.md §0.3: SCSI code, kernel enum pr_type, short name.
    let table = [
        (1, 1, "we", "Write Exclusive"),
        (3, 2, "ea", "Exclusive Access"),
        (5, 3, "we-ro", "Write Exclusive, Registrants Only"),
        (6, 4, "ea-ro", "Exclusive Access, Registrants Only"),
        (7, 5, "we-ar", "Write Exclusive, All Registrants"),
        (8, 6, "ea-ar", "Exclusive Access, All Registrants"),
    ];
    for (t, (scsi, kernel, short, name)) in PrType::ALL.into_iter().zip(table) {
        assert_eq!(t.scsi_code(), scsi);
        assert_eq!(t.kernel_code(), kernel);
        assert_eq!(t.short(), short);
        assert_eq!(t.name(), name);
        assert_eq!(t.to_string(), name);
        assert_eq!(PrType::from_scsi_code(scsi), Some(t));
        assert_eq!(PrType::from_kernel_code(kernel), Some(t));
        assert_eq!(short.parse::<PrType>(), Ok(t));
        assert_eq!(short.to_uppercase().parse::<PrType>(), Ok(t));
        assert_eq!(name.parse::<PrType>(), Ok(t));
        assert_eq!(name.to_lowercase().parse::<PrType>(), Ok(t));
        assert_eq!(scsi.to_string().parse::<PrType>(), Ok(t));
    }
    for code in [0u8, 2, 4, 9, 15, 255] {
        assert_eq!(PrType::from_scsi_code(code), None);
    }
    assert_eq!(PrType::from_kernel_code(0), None);
    assert_eq!(PrType::from_kernel_code(7), None);
    for bad in ["", "2", "0", "we_ro", "write", "256", "+5", " we"] {
        assert!(bad.parse::<PrType>().is_err(), "{bad:?}");
    }
    // fence_scsi's -T 5 is the kernel's PR_WRITE_EXCLUSIVE_REG_ONLY = 3.
    assert_eq!(PrType::from_scsi_code(5).map(PrType::kernel_code), Some(3));
}

#[test]
fn type_properties() {
    use PrType::*;
    let fences: Vec<_> = PrType::ALL
        .into_iter()
        .filter(|t| t.fences_reads())
        .collect();
    assert_eq!(
        fences,
        [
            ExclusiveAccess,
            ExclusiveAccessRegistrantsOnly,
            ExclusiveAccessAllRegistrants
        ]
    );
    let ar: Vec<_> = PrType::ALL
        .into_iter()
        .filter(|t| t.all_registrants())
        .collect();
    assert_eq!(
        ar,
        [WriteExclusiveAllRegistrants, ExclusiveAccessAllRegistrants]
    );
    let ro: Vec<_> = PrType::ALL
        .into_iter()
        .filter(|t| t.registrants_only())
        .collect();
    assert_eq!(
        ro,
        [
            WriteExclusiveRegistrantsOnly,
            ExclusiveAccessRegistrantsOnly
        ]
    );
    let mask = PrType::ALL
        .into_iter()
        .fold(0u16, |m, t| m | t.type_mask_bit());
    assert_eq!(mask, 0xea01);
}

#[test]
fn action_codes() {
    for (code, name) in [
        (0, "read keys"),
        (1, "read reservation"),
        (2, "report capabilities"),
        (3, "read full status"),
    ] {
        let a = InAction::from_code(code).unwrap();
        assert_eq!((a.code(), a.name()), (code, name));
    }
    assert_eq!(InAction::from_code(4), None);
    // prior-art.md §0.4.
    for (code, name) in [
        (0, "register"),
        (1, "reserve"),
        (2, "release"),
        (3, "clear"),
        (4, "preempt"),
        (5, "preempt and abort"),
        (6, "register and ignore existing key"),
    ] {
        let a = OutAction::from_code(code).unwrap();
        assert_eq!((a.code(), a.to_string().as_str()), (code, name));
    }
    assert_eq!(OutAction::from_code(7), None);
}

// ---- PR OUT -----------------------------------------------------------------------------

#[test]
fn out_parameter_list() {
    // sg_persist -o -I -S 0xaaaa000000000001 -Z: RESERVATION KEY 0, SERVICE ACTION
    // RESERVATION KEY in bytes 8–15, APTPL (byte 20 bit 0).
    let p = OutParams {
        sa_key: ReservationKey(0xaaaa_0000_0000_0001),
        aptpl: true,
        ..OutParams::default()
    };
    let mut want = [0u8; 24];
    want[8..16].copy_from_slice(&[0xaa, 0xaa, 0, 0, 0, 0, 0, 1]);
    want[20] = 0x01;
    assert_eq!(out_parameters(&p), want);
    let p = OutParams {
        key: ReservationKey(0x0102_0304_0506_0708),
        sa_key: ReservationKey::ZERO,
        aptpl: false,
        all_tg_pt: true,
        spec_i_pt: true,
    };
    let list = out_parameters(&p);
    assert_eq!(&list[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(list[20], 0x0C);
    assert_eq!(scope_type(None), 0);
    assert_eq!(
        scope_type(Some(PrType::ExclusiveAccessAllRegistrants)),
        0x08
    );
    let (cdb, _) = out_command(OutAction::Register, None, &p);
    assert_eq!(cdb, [0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]);
}

// ---- READ KEYS --------------------------------------------------------------------------

/// tgt after A and B registered (test-rig.md §3): `PRgeneration=18 keys=2: 0xaaaa000000000001
/// 0xbbbb000000000002`.
const TGT_READ_KEYS: [u8; 24] = [
    0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00, 0x10, 0xaa, 0xaa, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0xbb, 0xbb, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
];

#[test]
fn read_keys_tgt() {
    let k = parse_read_keys(&TGT_READ_KEYS).unwrap();
    assert_eq!(k.generation, 18);
    assert_eq!(
        k.keys,
        [
            ReservationKey(0xaaaa_0000_0000_0001),
            ReservationKey(0xbbbb_0000_0000_0002)
        ]
    );
    // tgt after a restart: `PRgeneration=0 keys=0`.
    assert_eq!(
        parse_read_keys(&[0; 8]).unwrap(),
        Keys {
            generation: 0,
            keys: vec![]
        }
    );
    // Trailing bytes past ADDITIONAL LENGTH (a bigger buffer, resid not reported) are ignored.
    let mut padded = TGT_READ_KEYS.to_vec();
    padded.extend_from_slice(&[0; 40]);
    assert_eq!(parse_read_keys(&padded).unwrap(), k);
}

#[test]
fn read_keys_truncated_and_bad() {
    // An 16-byte allocation: the device says 16 more bytes follow, sends 8.
    assert_eq!(
        parse_read_keys(&TGT_READ_KEYS[..16]),
        Err(PrParseError::Truncated {
            needed: 24,
            got: 16
        })
    );
    assert_eq!(
        parse_read_keys(&TGT_READ_KEYS[..5]),
        Err(PrParseError::Truncated { needed: 8, got: 5 })
    );
    assert_eq!(
        parse_read_keys(&[]),
        Err(PrParseError::Truncated { needed: 8, got: 0 })
    );
    let mut odd = TGT_READ_KEYS.to_vec();
    odd[7] = 12;
    assert!(matches!(
        parse_read_keys(&odd),
        Err(PrParseError::BadLength { value: 12, .. })
    ));
    // A huge ADDITIONAL LENGTH is a truncation, not an allocation.
    let huge = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        parse_read_keys(&huge),
        Err(PrParseError::Truncated { got: 8, .. })
    ));
}

// ---- READ RESERVATION -------------------------------------------------------------------

#[test]
fn read_reservation_tgt() {
    // tgt (test-rig.md §3): `holder key=0xaaaa000000000001 scope=0 type=5 (Write Exclusive,
    // Registrants Only)`; SPC-4 §6.15.3 layout: key in bytes 8–15, scope/type in byte 21.
    let mut data = header_bytes(18, &[0; 16]);
    data[8..16].copy_from_slice(&[0xaa, 0xaa, 0, 0, 0, 0, 0, 1]);
    data[21] = 0x05;
    let r = parse_read_reservation(&data).unwrap();
    assert_eq!(r.generation, 18);
    assert_eq!(
        r.holder,
        Some(ReservationHolder {
            key: ReservationKey(0xaaaa_0000_0000_0001),
            scope: LU_SCOPE,
            kind: PrType::WriteExclusiveRegistrantsOnly
        })
    );
    // Type 7 (all registrants): key reported as 0, as SPC says and tgt does.
    data[8..16].fill(0);
    data[21] = 0x07;
    let r = parse_read_reservation(&data).unwrap();
    let h = r.holder.unwrap();
    assert!(h.key.is_zero() && h.kind.all_registrants());
    // "there is NO reservation held".
    let none = parse_read_reservation(&[0, 0, 0, 3, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        none,
        Reservation {
            generation: 3,
            holder: None
        }
    );
}

#[test]
fn read_reservation_errors() {
    let mut data = header_bytes(1, &[0; 16]);
    data[21] = 0x02; // obsolete type
    assert_eq!(parse_read_reservation(&data), Err(PrParseError::BadType(2)));
    data[21] = 0x00;
    assert_eq!(parse_read_reservation(&data), Err(PrParseError::BadType(0)));
    let eight = header_bytes(1, &[0; 8]);
    assert!(matches!(
        parse_read_reservation(&eight),
        Err(PrParseError::BadLength { value: 8, .. })
    ));
    data[21] = 0x01;
    assert_eq!(
        parse_read_reservation(&data[..20]),
        Err(PrParseError::Truncated {
            needed: 24,
            got: 20
        })
    );
}

// ---- REPORT CAPABILITIES ----------------------------------------------------------------

#[test]
fn report_capabilities_tgt() {
    // tgt via sg_persist -c (test-rig.md §3, §7.5): "RLR_C 0, CRH 0, SIP_C 0, ATP_C 0,
    // PTPL_C 0, TMV 1, Allow Commands 0, PTPL_A 0", type mask 0xea01 (all six types).
    let data = [0x00, 0x08, 0x00, 0x80, 0xea, 0x01, 0x00, 0x00];
    let c = parse_report_capabilities(&data).unwrap();
    assert_eq!(
        c,
        Capabilities {
            crh: false,
            sip_c: false,
            atp_c: false,
            ptpl_c: false,
            tmv: true,
            allow_commands: 0,
            ptpl_a: false,
            types: PrType::ALL.to_vec(),
            raw_type_mask: 0xea01,
        }
    );
    assert!(c.supports(PrType::WriteExclusiveRegistrantsOnly));
}

#[test]
fn report_capabilities_bits() {
    // Every flag set, ALLOW COMMANDS 5, only WR_EX_RO (0x2000) in the mask.
    let data = [0x00, 0x08, 0x1D, 0xD1, 0x20, 0x00, 0x00, 0x00];
    let c = parse_report_capabilities(&data).unwrap();
    assert!(c.crh && c.sip_c && c.atp_c && c.ptpl_c && c.tmv && c.ptpl_a);
    assert_eq!(c.allow_commands, 5);
    assert_eq!(c.types, [PrType::WriteExclusiveRegistrantsOnly]);
    // TMV clear: the mask is kept raw but lists no types.
    let data = [0x00, 0x08, 0x00, 0x00, 0xea, 0x01, 0x00, 0x00];
    let c = parse_report_capabilities(&data).unwrap();
    assert!(c.types.is_empty());
    assert_eq!(c.raw_type_mask, 0xea01);
    assert!(!c.supports(PrType::WriteExclusive));
}

#[test]
fn report_capabilities_errors() {
    assert_eq!(
        parse_report_capabilities(&[0x00]),
        Err(PrParseError::Truncated { needed: 8, got: 1 })
    );
    assert_eq!(
        parse_report_capabilities(&[0x00, 0x08, 0, 0x80]),
        Err(PrParseError::Truncated { needed: 8, got: 4 })
    );
    assert!(matches!(
        parse_report_capabilities(&[0x00, 0x06, 0, 0, 0, 0, 0, 0]),
        Err(PrParseError::BadLength { value: 6, .. })
    ));
    // A longer LENGTH (a later standard's extra bytes) is accepted when present.
    let mut long = vec![0x00, 0x0A, 0x00, 0x80, 0xea, 0x01, 0, 0, 0, 0];
    assert!(parse_report_capabilities(&long).is_ok());
    long.pop();
    assert_eq!(
        parse_report_capabilities(&long),
        Err(PrParseError::Truncated { needed: 10, got: 9 })
    );
}

// ---- TransportIDs -----------------------------------------------------------------------

#[test]
fn iscsi_transport_ids() {
    // SPC-4 §7.6.4.6 format 1 (initiator port): "<name>,i,0x<isid>", NUL-terminated, padded
    // to a multiple of 4. The name is the initiator name the vm-harness guests use.
    let text = b"iqn.2024-01.example:host-a,i,0x23d000000001\0";
    let mut field = text.to_vec();
    field.resize(text.len().next_multiple_of(4), 0);
    let mut data = vec![0x45, 0x00, 0x00, u8::try_from(field.len()).unwrap()];
    data.extend_from_slice(&field);
    let (id, used) = parse_transport_id(&data).unwrap();
    assert_eq!(used, data.len());
    assert_eq!(
        id,
        TransportId::Iscsi {
            name: "iqn.2024-01.example:host-a".into(),
            isid: Some("23d000000001".into())
        }
    );
    assert_eq!(
        id.to_string(),
        "iqn.2024-01.example:host-a,i,0x23d000000001"
    );
    assert_eq!(id.to_bytes(), data);
    assert_eq!(id.protocol(), 5);

    // Format 0 (device name): short names are padded to the 20-byte minimum.
    let id = TransportId::Iscsi {
        name: "iqn.x:y".into(),
        isid: None,
    };
    let bytes = id.to_bytes();
    assert_eq!(bytes.len(), 20);
    assert_eq!(&bytes[..4], &[0x05, 0x00, 0x00, 16]);
    assert_eq!(&bytes[4..12], b"iqn.x:y\0");
    assert_eq!(parse_transport_id(&bytes).unwrap(), (id.clone(), 20));
    assert_eq!(id.to_string(), "iqn.x:y");
    // More bytes after the TransportID are not consumed.
    let mut more = bytes.clone();
    more.extend_from_slice(&[0xff; 7]);
    assert_eq!(parse_transport_id(&more).unwrap().1, 20);
}

#[test]
fn iscsi_transport_id_errors() {
    let good = TransportId::Iscsi {
        name: "iqn.x:y".into(),
        isid: None,
    }
    .to_bytes();
    assert_eq!(
        parse_transport_id(&good[..19]),
        Err(PrParseError::Truncated {
            needed: 20,
            got: 19
        })
    );
    assert!(matches!(
        parse_transport_id(&good[..3]),
        Err(PrParseError::Truncated { got: 3, .. })
    ));
    let mut no_nul = good.clone();
    no_nul[4..].fill(b'a');
    assert!(matches!(
        parse_transport_id(&no_nul),
        Err(PrParseError::BadTransportId(_))
    ));
    let mut empty = good.clone();
    empty[4..].fill(0);
    assert!(matches!(
        parse_transport_id(&empty),
        Err(PrParseError::BadTransportId(_))
    ));
    let mut format1 = good.clone();
    format1[0] = 0x45; // format 1 without ",i,0x"
    assert!(matches!(
        parse_transport_id(&format1),
        Err(PrParseError::BadTransportId(_))
    ));
    let mut format2 = good.clone();
    format2[0] = 0x85;
    assert!(matches!(
        parse_transport_id(&format2),
        Err(PrParseError::BadTransportId(_))
    ));
    let mut bad_isid = b"\x45\0\0\x10iqn.a,i,0xzz\0\0\0\0".to_vec();
    assert!(matches!(
        parse_transport_id(&bad_isid),
        Err(PrParseError::BadTransportId(_))
    ));
    bad_isid[4] = 0xff; // not UTF-8
    assert!(matches!(
        parse_transport_id(&bad_isid),
        Err(PrParseError::BadTransportId(_))
    ));
}

#[test]
fn fixed_size_transport_ids() {
    // SPC-4 §7.6.4.2 (FC): N_PORT_NAME in bytes 8–15.
    let mut fc = [0u8; 24];
    fc[8..16].copy_from_slice(&0x2100_0024_ff31_4159u64.to_be_bytes());
    let (id, used) = parse_transport_id(&fc).unwrap();
    assert_eq!(
        (id.clone(), used),
        (
            TransportId::FibreChannel {
                n_port_name: 0x2100_0024_ff31_4159
            },
            24
        )
    );
    assert_eq!(id.to_string(), "fc 0x21000024ff314159");
    assert_eq!(id.to_bytes(), fc);
    // SPC-4 §7.6.4.7 (SAS): SAS ADDRESS in bytes 4–11.
    let mut sas = [0u8; 24];
    sas[0] = 0x06;
    sas[4..12].copy_from_slice(&0x5000_c500_1234_5678u64.to_be_bytes());
    let (id, _) = parse_transport_id(&sas).unwrap();
    assert_eq!(
        id,
        TransportId::Sas {
            address: 0x5000_c500_1234_5678
        }
    );
    assert_eq!(id.to_string(), "sas 0x5000c50012345678");
    // SRP: 16-byte identifier in bytes 8–23.
    let mut srp = [0u8; 24];
    srp[0] = 0x04;
    srp[8..24].copy_from_slice(&[0x11; 16]);
    let (id, _) = parse_transport_id(&srp).unwrap();
    assert_eq!(id, TransportId::Srp { id: [0x11; 16] });
    assert_eq!(id.to_string(), "srp 0x11111111111111111111111111111111");
    // IEEE 1394: EUI-64 in bytes 8–15.
    let mut fw = [0u8; 24];
    fw[0] = 0x03;
    fw[15] = 0x42;
    let (id, _) = parse_transport_id(&fw).unwrap();
    assert_eq!(id, TransportId::Ieee1394 { eui64: 0x42 });
    // Unknown protocol (0xA, SOP), and a known one with format 1: kept whole.
    let mut sop = [0u8; 24];
    sop[0] = 0x0A;
    sop[8] = 0x12;
    let (id, _) = parse_transport_id(&sop).unwrap();
    assert_eq!(
        id,
        TransportId::Other {
            protocol: 0x0A,
            bytes: sop.to_vec()
        }
    );
    assert!(id.to_string().starts_with("protocol 0xa 0a00"));
    let mut fc1 = fc;
    fc1[0] = 0x40;
    assert!(matches!(
        parse_transport_id(&fc1).unwrap().0,
        TransportId::Other { protocol: 0, .. }
    ));
    assert_eq!(
        parse_transport_id(&fc[..23]),
        Err(PrParseError::Truncated {
            needed: 24,
            got: 23
        })
    );
    assert!(matches!(
        parse_transport_id(&[]),
        Err(PrParseError::Truncated { got: 0, .. })
    ));
}

// ---- READ FULL STATUS -------------------------------------------------------------------

#[test]
fn read_full_status_two_iscsi_initiators() {
    // SPC-4 §6.15.5 layout, as LIO reports two iSCSI initiators: A holds a WE-RO reservation
    // through relative target port 1, B is registered through all target ports.
    let a = StatusEntry {
        key: ReservationKey(0xaaaa_0000_0000_0001),
        all_tg_pt: false,
        holder: true,
        scope: LU_SCOPE,
        kind: Some(PrType::WriteExclusiveRegistrantsOnly),
        relative_target_port: 1,
        transport_id: TransportId::Iscsi {
            name: "iqn.2024-01.example:host-a".into(),
            isid: Some("23d000000001".into()),
        },
    };
    let b = StatusEntry {
        key: ReservationKey(0xbbbb_0000_0000_0002),
        all_tg_pt: true,
        holder: false,
        scope: 0,
        kind: None,
        relative_target_port: 0,
        transport_id: TransportId::Iscsi {
            name: "iqn.2024-01.example:host-b".into(),
            isid: None,
        },
    };
    let status = FullStatus {
        generation: 7,
        entries: vec![a, b],
    };
    let data = encode_full_status(&status);
    // First descriptor: byte 12 R_HOLDER, byte 13 type 5, bytes 18–19 port 1, 20–23 length.
    assert_eq!(
        &data[8 + 12..8 + 24],
        &[1, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 48]
    );
    assert_eq!(parse_read_full_status(&data).unwrap(), status);
    // Truncated by the allocation length.
    assert_eq!(
        parse_read_full_status(&data[..40]),
        Err(PrParseError::Truncated {
            needed: data.len(),
            got: 40
        })
    );
}

#[test]
fn read_full_status_errors() {
    let entry = StatusEntry {
        key: ReservationKey(1),
        all_tg_pt: false,
        holder: true,
        scope: 0,
        kind: Some(PrType::WriteExclusive),
        relative_target_port: 1,
        transport_id: TransportId::Sas { address: 5 },
    };
    let good = encode_full_status(&FullStatus {
        generation: 1,
        entries: vec![entry],
    });
    assert_eq!(good.len(), 8 + 24 + 24);
    // Holder with an invalid type.
    let mut bad = good.clone();
    bad[8 + 13] = 0x04;
    assert_eq!(parse_read_full_status(&bad), Err(PrParseError::BadType(4)));
    // Not a holder: the type field is reserved and not decoded.
    bad[8 + 12] = 0;
    let parsed = parse_read_full_status(&bad).unwrap();
    assert_eq!(parsed.entries[0].kind, None);
    // Descriptor length past ADDITIONAL LENGTH.
    let mut bad = good.clone();
    bad[8 + 23] = 25;
    assert!(matches!(
        parse_read_full_status(&bad),
        Err(PrParseError::BadLength { .. })
    ));
    // A TransportID that needs more than its descriptor gives it.
    let mut bad = good.clone();
    bad[8 + 23] = 20;
    bad[4..8].copy_from_slice(&44u32.to_be_bytes());
    bad.truncate(8 + 44);
    assert!(matches!(
        parse_read_full_status(&bad),
        Err(PrParseError::BadTransportId(_))
    ));
    // ADDITIONAL LENGTH leaving a partial descriptor.
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&60u32.to_be_bytes());
    bad.extend_from_slice(&[0; 12]);
    assert!(matches!(
        parse_read_full_status(&bad),
        Err(PrParseError::BadLength { value: 12, .. })
    ));
    // Empty: nobody registered.
    assert_eq!(
        parse_read_full_status(&[0, 0, 0, 9, 0, 0, 0, 0]).unwrap(),
        FullStatus {
            generation: 9,
            entries: vec![]
        }
    );
}

// ---- properties -------------------------------------------------------------------------

fn key() -> impl Strategy<Value = ReservationKey> {
    any::<u64>().prop_map(ReservationKey)
}

fn pr_type() -> impl Strategy<Value = PrType> {
    proptest::sample::select(PrType::ALL.to_vec())
}

fn transport_id() -> impl Strategy<Value = TransportId> {
    prop_oneof![
        any::<u64>().prop_map(|n_port_name| TransportId::FibreChannel { n_port_name }),
        ("[a-z0-9.:-]{1,80}", proptest::option::of("[0-9a-f]{1,12}"))
            .prop_map(|(name, isid)| TransportId::Iscsi { name, isid }),
        any::<u64>().prop_map(|address| TransportId::Sas { address }),
        any::<[u8; 16]>().prop_map(|id| TransportId::Srp { id }),
        any::<u64>().prop_map(|eui64| TransportId::Ieee1394 { eui64 }),
        (
            proptest::sample::select(vec![1u8, 2, 7, 8, 9, 0xA, 0xB, 0xF]),
            proptest::collection::vec(any::<u8>(), 23)
        )
            .prop_map(|(protocol, rest)| {
                let mut bytes = vec![protocol];
                bytes.extend_from_slice(&rest);
                TransportId::Other { protocol, bytes }
            }),
    ]
}

fn status_entry() -> impl Strategy<Value = StatusEntry> {
    (
        key(),
        any::<bool>(),
        proptest::option::of(pr_type()),
        any::<u16>(),
        transport_id(),
    )
        .prop_map(
            |(key, all_tg_pt, kind, relative_target_port, transport_id)| StatusEntry {
                key,
                all_tg_pt,
                holder: kind.is_some(),
                scope: 0,
                kind,
                relative_target_port,
                transport_id,
            },
        )
}

proptest! {
    #[test]
    fn key_text_round_trip(k in key()) {
        prop_assert_eq!(k.to_string().parse::<ReservationKey>(), Ok(k));
        prop_assert_eq!(k.0.to_string().parse::<ReservationKey>(), Ok(k));
        prop_assert_eq!(format!("0x{:x}", k.0).parse::<ReservationKey>(), Ok(k));
        prop_assert_eq!(k.to_string().len(), 18);
    }

    #[test]
    fn key_from_str_never_panics(s in "\\PC{0,24}") {
        let _ = s.parse::<ReservationKey>();
        let _ = s.parse::<PrType>();
    }

    #[test]
    fn type_text_round_trip(t in pr_type()) {
        prop_assert_eq!(t.to_string().parse::<PrType>(), Ok(t));
        prop_assert_eq!(t.short().parse::<PrType>(), Ok(t));
        prop_assert_eq!(PrType::from_kernel_code(t.kernel_code()), Some(t));
        prop_assert_eq!(PrType::from_scsi_code(t.scsi_code()), Some(t));
    }

    #[test]
    fn read_keys_round_trip(generation: u32, keys in proptest::collection::vec(key(), 0..40)) {
        let k = Keys { generation, keys };
        let data = encode_keys(&k);
        prop_assert_eq!(parse_read_keys(&data), Ok(k));
        // Every cut is reported as truncation with the full size.
        for cut in 0..data.len() {
            let needed = if cut < 8 { 8 } else { data.len() };
            prop_assert_eq!(
                parse_read_keys(&data[..cut]),
                Err(PrParseError::Truncated { needed, got: cut })
            );
        }
    }

    #[test]
    fn read_reservation_round_trip(
        generation: u32,
        holder in proptest::option::of((key(), 0u8..16, pr_type()))
    ) {
        let r = Reservation {
            generation,
            holder: holder.map(|(key, scope, kind)| ReservationHolder { key, scope, kind }),
        };
        prop_assert_eq!(parse_read_reservation(&encode_reservation(&r)), Ok(r));
    }

    #[test]
    fn capabilities_round_trip(
        flags in proptest::array::uniform7(any::<bool>()),
        allow_commands in 0u8..8,
        raw_type_mask: u16,
    ) {
        let [crh, sip_c, atp_c, ptpl_c, tmv, ptpl_a, _] = flags;
        let types = match tmv {
            true => PrType::ALL.into_iter().filter(|t| raw_type_mask & t.type_mask_bit() != 0).collect(),
            false => Vec::new(),
        };
        let c = Capabilities { crh, sip_c, atp_c, ptpl_c, tmv, allow_commands, ptpl_a, types, raw_type_mask };
        prop_assert_eq!(parse_report_capabilities(&encode_capabilities(&c)), Ok(c));
    }

    #[test]
    fn transport_id_round_trip(id in transport_id()) {
        let bytes = id.to_bytes();
        prop_assert!(bytes.len() >= 20 && bytes.len() % 4 == 0);
        prop_assert_eq!(parse_transport_id(&bytes), Ok((id, bytes.len())));
    }

    #[test]
    fn full_status_round_trip(
        generation: u32,
        entries in proptest::collection::vec(status_entry(), 0..8)
    ) {
        let s = FullStatus { generation, entries };
        let data = encode_full_status(&s);
        prop_assert_eq!(parse_read_full_status(&data), Ok(s));
        if data.len() > 8 {
            let cut = data.len() - 1;
            prop_assert_eq!(
                parse_read_full_status(&data[..cut]),
                Err(PrParseError::Truncated { needed: data.len(), got: cut })
            );
        }
    }

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_read_keys(&data);
        let _ = parse_read_reservation(&data);
        let _ = parse_report_capabilities(&data);
        let _ = parse_read_full_status(&data);
        if let Ok((id, used)) = parse_transport_id(&data) {
            prop_assert!(used <= data.len());
            let _ = id.to_string();
            prop_assert_eq!(parse_transport_id(&id.to_bytes()).map(|r| r.0), Ok(id));
        }
    }

    #[test]
    fn parsers_never_panic_on_plausible_headers(
        generation: u32,
        additional in 0u32..120,
        body in proptest::collection::vec(any::<u8>(), 0..120)
    ) {
        // Random bodies behind a header whose length is near the data's, so descriptors and
        // TransportIDs get decoded rather than rejected as truncated.
        let mut data = generation.to_be_bytes().to_vec();
        data.extend_from_slice(&additional.to_be_bytes());
        data.extend_from_slice(&body);
        let _ = parse_read_keys(&data);
        let _ = parse_read_reservation(&data);
        if let Ok(s) = parse_read_full_status(&data) {
            for e in &s.entries {
                let _ = e.transport_id.to_string();
                prop_assert_eq!(e.holder, e.kind.is_some());
            }
        }
    }
}
