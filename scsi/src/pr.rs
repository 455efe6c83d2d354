//! SCSI-3 persistent reservations: pure encoders and decoders, no I/O.
//!
//! Section numbers cite SPC-4 (T10/BSR INCITS 513 revision 37): §5.13 "Reservations", §6.15
//! "PERSISTENT RESERVE IN command", §6.16 "PERSISTENT RESERVE OUT command", §7.6.4
//! "TransportID identifiers". The CDB builders are [`cdb::persistent_reserve_in`] and
//! [`cdb::persistent_reserve_out`].
//!
//! # Parameter data the device returns
//!
//! | service action | decoder | result |
//! |---|---|---|
//! | READ KEYS (0) | [`parse_read_keys`] | [`Keys`] |
//! | READ RESERVATION (1) | [`parse_read_reservation`] | [`Reservation`] |
//! | REPORT CAPABILITIES (2) | [`parse_report_capabilities`] | [`Capabilities`] |
//! | READ FULL STATUS (3) | [`parse_read_full_status`] | [`FullStatus`] |
//!
//! # Truncation
//!
//! A device returns at most the ALLOCATION LENGTH the CDB asked for, but its length fields
//! (ADDITIONAL LENGTH, or LENGTH for REPORT CAPABILITIES) always describe the whole answer.
//! When they promise more bytes than were received, the decoders return
//! [`PrParseError::Truncated`] with `needed`, the full size: send the command again with that
//! allocation length (as [`Device`](crate::Device) does once, up to 65 535 bytes, the most the
//! 16-bit field can ask for). Bytes beyond the declared length (padding, or a transport that
//! does not report the residual count) are ignored.
//!
//! # Type codes
//!
//! [`PrType`] is the one place that maps between the SCSI type codes (CDB byte 2, READ
//! RESERVATION, `sg_persist -T`) and the kernel's `enum pr_type` (`<linux/pr.h>`), which
//! numbers the same six types differently.

use std::fmt;
use std::str::FromStr;

use crate::cdb;

pub use crate::reservations::PersistentReservations;

/// The only SCOPE value SPC-4 still defines: LU_SCOPE (§6.16.2 table "Persistent reservation
/// scope codes").
pub const LU_SCOPE: u8 = 0;

/// Length of the basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3, without
/// TransportIDs).
pub const OUT_PARAMETERS_LEN: usize = 24;

/// Length of the header (PRGENERATION, ADDITIONAL LENGTH) of READ KEYS, READ RESERVATION and
/// READ FULL STATUS parameter data.
pub const IN_HEADER_LEN: usize = 8;

/// Length of a TransportID of every protocol but iSCSI (SPC-4 §7.6.4.1).
pub const FIXED_TRANSPORT_ID_LEN: usize = 24;

/// A reservation key: the 8-byte value an I_T nexus registers with (SPC-4 §5.13.3).
///
/// Displayed as `0x` and 16 lowercase hex digits, the form `sg_persist` and multipath's
/// `prkeys` file use. Parsed from `0x` (or `0X`) and 1 to 16 hex digits, or from a decimal
/// number.
///
/// ```
/// use disklock_scsi::pr::ReservationKey;
/// let key: ReservationKey = "0x6c9d0002".parse().unwrap();
/// assert_eq!(key.to_string(), "0x000000006c9d0002");
/// assert_eq!("42".parse::<ReservationKey>().unwrap(), ReservationKey(42));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReservationKey(pub u64);

impl ReservationKey {
    /// Key 0: "no key" (REGISTER with a zero service action key unregisters).
    pub const ZERO: ReservationKey = ReservationKey(0);

    /// `true` for key 0.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The key as it travels on the wire (big-endian).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// A key from its wire form (big-endian).
    pub fn from_be_bytes(bytes: [u8; 8]) -> ReservationKey {
        ReservationKey(u64::from_be_bytes(bytes))
    }
}

impl fmt::Display for ReservationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// Text that is not a [`ReservationKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid reservation key {input:?}: expected 0x and 1 to 16 hex digits, or a decimal number"
)]
pub struct ParseKeyError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for ReservationKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseKeyError {
            input: s.to_owned(),
        };
        let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => {
                if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err());
                }
                u64::from_str_radix(hex, 16)
            }
            None => {
                // u64::from_str would also take a leading '+'.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                s.parse::<u64>()
            }
        };
        parsed.map(ReservationKey).map_err(|_| err())
    }
}

/// A persistent reservation type (SPC-4 §6.16.2 table "Persistent reservation type codes").
///
/// "Registrants only" types let every registered I_T nexus through; "all registrants" types
/// make every registrant a reservation holder (READ RESERVATION then reports key 0).
/// Write Exclusive types still let anyone read; Exclusive Access types fence reads too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrType {
    /// SCSI 1, kernel 1: only the holder may write.
    WriteExclusive,
    /// SCSI 3, kernel 2: only the holder may read or write.
    ExclusiveAccess,
    /// SCSI 5, kernel 3: only registrants may write (the type fence_scsi uses).
    WriteExclusiveRegistrantsOnly,
    /// SCSI 6, kernel 4: only registrants may read or write.
    ExclusiveAccessRegistrantsOnly,
    /// SCSI 7, kernel 5: only registrants may write; every registrant is a holder.
    WriteExclusiveAllRegistrants,
    /// SCSI 8, kernel 6: only registrants may read or write; every registrant is a holder.
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// All six types, in SCSI code order.
    pub const ALL: [PrType; 6] = [
        PrType::WriteExclusive,
        PrType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants,
    ];

    /// The SCSI TYPE code (CDB byte 2 bits 3–0, READ RESERVATION byte 21): 1, 3, 5, 6, 7, 8.
    pub fn scsi_code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
            PrType::WriteExclusiveAllRegistrants => 7,
            PrType::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// The type with SCSI code `code`; `None` for reserved and obsolete codes.
    pub fn from_scsi_code(code: u8) -> Option<PrType> {
        PrType::ALL.into_iter().find(|t| t.scsi_code() == code)
    }

    /// The kernel's `enum pr_type` value (`<linux/pr.h>`: `PR_WRITE_EXCLUSIVE` = 1 …
    /// `PR_EXCLUSIVE_ACCESS_ALL_REGS` = 6), for the block-layer PR ioctls.
    pub fn kernel_code(self) -> u32 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 2,
            PrType::WriteExclusiveRegistrantsOnly => 3,
            PrType::ExclusiveAccessRegistrantsOnly => 4,
            PrType::WriteExclusiveAllRegistrants => 5,
            PrType::ExclusiveAccessAllRegistrants => 6,
        }
    }

    /// The type with kernel `enum pr_type` value `code`; `None` otherwise (0 is what the
    /// kernel reports when nobody holds a reservation).
    pub fn from_kernel_code(code: u32) -> Option<PrType> {
        PrType::ALL.into_iter().find(|t| t.kernel_code() == code)
    }

    /// SPC's name, e.g. "Write Exclusive, Registrants Only".
    pub fn name(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "Write Exclusive",
            PrType::ExclusiveAccess => "Exclusive Access",
            PrType::WriteExclusiveRegistrantsOnly => "Write Exclusive, Registrants Only",
            PrType::ExclusiveAccessRegistrantsOnly => "Exclusive Access, Registrants Only",
            PrType::WriteExclusiveAllRegistrants => "Write Exclusive, All Registrants",
            PrType::ExclusiveAccessAllRegistrants => "Exclusive Access, All Registrants",
        }
    }

    /// Short name for configuration and command lines: `we`, `ea`, `we-ro`, `ea-ro`, `we-ar`,
    /// `ea-ar`.
    pub fn short(self) -> &'static str {
        match self {
            PrType::WriteExclusive => "we",
            PrType::ExclusiveAccess => "ea",
            PrType::WriteExclusiveRegistrantsOnly => "we-ro",
            PrType::ExclusiveAccessRegistrantsOnly => "ea-ro",
            PrType::WriteExclusiveAllRegistrants => "we-ar",
            PrType::ExclusiveAccessAllRegistrants => "ea-ar",
        }
    }

    /// `true` for the two "all registrants" types: every registrant holds the reservation, and
    /// READ RESERVATION reports key 0.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// `true` for the two "registrants only" types.
    pub fn registrants_only(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
        )
    }

    /// `true` for the Exclusive Access types, which also refuse reads from those not allowed.
    pub fn fences_reads(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// The type's bit in REPORT CAPABILITIES' PERSISTENT RESERVATION TYPE MASK, read as a
    /// big-endian `u16` of bytes 4–5 (SPC-4 §6.15.4: byte 4 bit 7 WR_EX_AR, bit 6 EX_AC_RO,
    /// bit 5 WR_EX_RO, bit 3 EX_AC, bit 1 WR_EX; byte 5 bit 0 EX_AC_AR).
    pub fn type_mask_bit(self) -> u16 {
        match self {
            PrType::WriteExclusive => 0x0200,
            PrType::ExclusiveAccess => 0x0800,
            PrType::WriteExclusiveRegistrantsOnly => 0x2000,
            PrType::ExclusiveAccessRegistrantsOnly => 0x4000,
            PrType::WriteExclusiveAllRegistrants => 0x8000,
            PrType::ExclusiveAccessAllRegistrants => 0x0001,
        }
    }
}

impl fmt::Display for PrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Text that is not a [`PrType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid reservation type {input:?}: expected we, ea, we-ro, ea-ro, we-ar, ea-ar, a type name or a scsi type code"
)]
pub struct ParseTypeError {
    /// The rejected text.
    pub input: String,
}

impl FromStr for PrType {
    type Err = ParseTypeError;

    /// Accepts the short name, the SPC name (both case-insensitive) or the SCSI code (`"5"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let by_name = PrType::ALL
            .into_iter()
            .find(|t| s.eq_ignore_ascii_case(t.short()) || s.eq_ignore_ascii_case(t.name()));
        let by_code = || {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<u8>().ok())
                .flatten()
                .and_then(PrType::from_scsi_code)
        };
        by_name.or_else(by_code).ok_or_else(|| ParseTypeError {
            input: s.to_owned(),
        })
    }
}

/// The scope-and-type byte of a PERSISTENT RESERVE OUT CDB (byte 2): SCOPE in bits 7–4, TYPE
/// in bits 3–0. `None` (REGISTER, CLEAR) gives 0.
pub fn scope_type(kind: Option<PrType>) -> u8 {
    kind.map_or(0, |k| (LU_SCOPE << 4) | k.scsi_code())
}

/// PERSISTENT RESERVE IN service actions (SPC-4 §6.15.1 table "PERSISTENT RESERVE IN service
/// action codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InAction {
    /// 0x00: the registered reservation keys.
    ReadKeys,
    /// 0x01: the reservation, if any.
    ReadReservation,
    /// 0x02: what the device server supports.
    ReportCapabilities,
    /// 0x03: every registration with its TransportID.
    ReadFullStatus,
}

impl InAction {
    /// The SERVICE ACTION code (CDB byte 1 bits 4–0).
    pub fn code(self) -> u8 {
        match self {
            InAction::ReadKeys => 0x00,
            InAction::ReadReservation => 0x01,
            InAction::ReportCapabilities => 0x02,
            InAction::ReadFullStatus => 0x03,
        }
    }

    /// The action with this code; `None` for reserved codes.
    pub fn from_code(code: u8) -> Option<InAction> {
        [
            InAction::ReadKeys,
            InAction::ReadReservation,
            InAction::ReportCapabilities,
            InAction::ReadFullStatus,
        ]
        .into_iter()
        .find(|a| a.code() == code)
    }

    /// Lowercase name, e.g. "read keys".
    pub fn name(self) -> &'static str {
        match self {
            InAction::ReadKeys => "read keys",
            InAction::ReadReservation => "read reservation",
            InAction::ReportCapabilities => "report capabilities",
            InAction::ReadFullStatus => "read full status",
        }
    }
}

impl fmt::Display for InAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 §6.16.2 table "PERSISTENT RESERVE OUT service
/// action codes"). REGISTER AND MOVE (7) and REPLACE LOST RESERVATION (8) are not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutAction {
    /// 0x00: add, change (key → service action key) or remove (service action key 0) this
    /// nexus's registration.
    Register,
    /// 0x01: take the reservation of the CDB's type.
    Reserve,
    /// 0x02: give up the reservation (type must match).
    Release,
    /// 0x03: remove every registration and the reservation.
    Clear,
    /// 0x04: remove the registrations of the service action key (and take over its
    /// reservation).
    Preempt,
    /// 0x05: PREEMPT, and abort the preempted nexuses' outstanding commands.
    PreemptAndAbort,
    /// 0x06: register the service action key whatever this nexus had registered.
    RegisterAndIgnoreExistingKey,
}

impl OutAction {
    /// The SERVICE ACTION code (CDB byte 1 bits 4–0).
    pub fn code(self) -> u8 {
        match self {
            OutAction::Register => 0x00,
            OutAction::Reserve => 0x01,
            OutAction::Release => 0x02,
            OutAction::Clear => 0x03,
            OutAction::Preempt => 0x04,
            OutAction::PreemptAndAbort => 0x05,
            OutAction::RegisterAndIgnoreExistingKey => 0x06,
        }
    }

    /// The action with this code; `None` for codes not listed here.
    pub fn from_code(code: u8) -> Option<OutAction> {
        [
            OutAction::Register,
            OutAction::Reserve,
            OutAction::Release,
            OutAction::Clear,
            OutAction::Preempt,
            OutAction::PreemptAndAbort,
            OutAction::RegisterAndIgnoreExistingKey,
        ]
        .into_iter()
        .find(|a| a.code() == code)
    }

    /// Lowercase name, e.g. "register and ignore existing key".
    pub fn name(self) -> &'static str {
        match self {
            OutAction::Register => "register",
            OutAction::Reserve => "reserve",
            OutAction::Release => "release",
            OutAction::Clear => "clear",
            OutAction::Preempt => "preempt",
            OutAction::PreemptAndAbort => "preempt and abort",
            OutAction::RegisterAndIgnoreExistingKey => "register and ignore existing key",
        }
    }
}

impl fmt::Display for OutAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of a REGISTER or REGISTER AND IGNORE EXISTING KEY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegisterFlags {
    /// Send REGISTER AND IGNORE EXISTING KEY: the current key is not checked.
    pub ignore_existing: bool,
    /// APTPL: keep registrations and the reservation across power loss (tgt rejects it).
    pub aptpl: bool,
    /// ALL_TG_PT: register the initiator port with every target port of the device.
    pub all_tg_pt: bool,
}

/// The fields of the basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OutParams {
    /// RESERVATION KEY: the key this nexus is registered with (0 when registering anew).
    pub key: ReservationKey,
    /// SERVICE ACTION RESERVATION KEY: the new key (REGISTER) or the victim (PREEMPT).
    pub sa_key: ReservationKey,
    /// APTPL: activate persist through power loss (REGISTER only).
    pub aptpl: bool,
    /// ALL_TG_PT (REGISTER only).
    pub all_tg_pt: bool,
    /// SPEC_I_PT: TransportIDs follow (never set by this crate's builders: they send no
    /// TransportID list).
    pub spec_i_pt: bool,
}

/// Encodes the 24-byte parameter list (SPC-4 §6.16.3): RESERVATION KEY (bytes 0–7), SERVICE
/// ACTION RESERVATION KEY (8–15), obsolete (16–19), SPEC_I_PT / ALL_TG_PT / APTPL (byte 20
/// bits 3, 2, 0), reserved and obsolete (21–23).
pub fn out_parameters(p: &OutParams) -> [u8; OUT_PARAMETERS_LEN] {
    let mut out = [0u8; OUT_PARAMETERS_LEN];
    out[0..8].copy_from_slice(&p.key.to_be_bytes());
    out[8..16].copy_from_slice(&p.sa_key.to_be_bytes());
    out[20] = (u8::from(p.spec_i_pt) << 3) | (u8::from(p.all_tg_pt) << 2) | u8::from(p.aptpl);
    out
}

/// What is wrong with PERSISTENT RESERVE IN parameter data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrParseError {
    /// The data's length field promises `needed` bytes but only `got` arrived. Ask again with
    /// an allocation length of at least `needed` (see the module documentation).
    #[error("parameter data truncated: {needed} bytes declared, {got} received")]
    Truncated {
        /// Bytes the whole answer takes, from its length field.
        needed: usize,
        /// Bytes received.
        got: usize,
    },
    /// A length field that contradicts the format (not a multiple of the entry size, a
    /// descriptor running past the end, a LENGTH below the minimum).
    #[error("bad {field}: {value}")]
    BadLength {
        /// Which length.
        field: &'static str,
        /// Its value.
        value: usize,
    },
    /// A reserved or obsolete SCSI reservation type code where a holder is reported.
    #[error("invalid reservation type code {0:#04x}")]
    BadType(u8),
    /// A kernel `enum pr_type` value this crate does not know.
    #[error("invalid kernel reservation type {0}")]
    BadKernelType(u32),
    /// A malformed TransportID.
    #[error("bad transport id: {0}")]
    BadTransportId(&'static str),
}

/// READ KEYS parameter data (SPC-4 §6.15.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Keys {
    /// PRGENERATION: bumped by every successful REGISTER, CLEAR, PREEMPT, ….
    pub generation: u32,
    /// The registered keys, one per registered I_T nexus (duplicates are possible).
    pub keys: Vec<ReservationKey>,
}

/// READ RESERVATION parameter data (SPC-4 §6.15.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Reservation {
    /// PRGENERATION.
    pub generation: u32,
    /// The reservation, `None` when nobody holds one.
    pub holder: Option<ReservationHolder>,
}

/// The reservation reported by READ RESERVATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationHolder {
    /// The holder's key; 0 for the "all registrants" types.
    pub key: ReservationKey,
    /// SCOPE (0 = LU_SCOPE).
    pub scope: u8,
    /// TYPE.
    pub kind: PrType,
}

/// REPORT CAPABILITIES parameter data (SPC-4 §6.15.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Capabilities {
    /// CRH: compatible reservation handling (SPC-2 RESERVE/RELEASE interplay).
    pub crh: bool,
    /// SIP_C: SPEC_I_PT supported.
    pub sip_c: bool,
    /// ATP_C: ALL_TG_PT supported.
    pub atp_c: bool,
    /// PTPL_C: persist through power loss supported.
    pub ptpl_c: bool,
    /// TMV: the type mask is valid.
    pub tmv: bool,
    /// ALLOW COMMANDS (3 bits).
    pub allow_commands: u8,
    /// PTPL_A: persist through power loss is active.
    pub ptpl_a: bool,
    /// The types in the type mask, in SCSI code order; empty when `tmv` is clear.
    pub types: Vec<PrType>,
    /// PERSISTENT RESERVATION TYPE MASK, bytes 4–5 as a big-endian `u16` (tgt: 0xea01).
    pub raw_type_mask: u16,
}

impl Capabilities {
    /// `true` if the type mask is valid and lists `kind`.
    pub fn supports(&self, kind: PrType) -> bool {
        self.types.contains(&kind)
    }
}

/// READ FULL STATUS parameter data (SPC-4 §6.15.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FullStatus {
    /// PRGENERATION.
    pub generation: u32,
    /// One entry per registration.
    pub entries: Vec<StatusEntry>,
}

/// One full status descriptor: a registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusEntry {
    /// The registered key.
    pub key: ReservationKey,
    /// ALL_TG_PT: registered through every target port.
    pub all_tg_pt: bool,
    /// R_HOLDER: this registration holds the reservation.
    pub holder: bool,
    /// SCOPE (meaningful only for a holder).
    pub scope: u8,
    /// TYPE: `Some` exactly when `holder` is set.
    pub kind: Option<PrType>,
    /// RELATIVE TARGET PORT IDENTIFIER (meaningless when `all_tg_pt`).
    pub relative_target_port: u16,
    /// The initiator port.
    pub transport_id: TransportId,
}

/// An initiator port's TransportID (SPC-4 §7.6.4), by protocol identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransportId {
    /// Protocol 0, Fibre Channel: the N_Port name (bytes 8–15).
    FibreChannel {
        /// N_PORT_NAME.
        n_port_name: u64,
    },
    /// Protocol 5, iSCSI. Format 0 carries the iSCSI name; format 1 (initiator port) adds
    /// the ISID, written `name,i,0x<isid>` on the wire and by `Display`.
    Iscsi {
        /// The iSCSI name, e.g. `iqn.1994-05.com.redhat:host1`.
        name: String,
        /// The initiator session id, hex digits as sent (format 1 only).
        isid: Option<String>,
    },
    /// Protocol 6, SAS: the SAS address (bytes 4–11).
    Sas {
        /// SAS ADDRESS.
        address: u64,
    },
    /// Protocol 4, SCSI RDMA: the initiator port identifier (bytes 8–23).
    Srp {
        /// INITIATOR PORT IDENTIFIER.
        id: [u8; 16],
    },
    /// Protocol 3, IEEE 1394: the EUI-64 (bytes 8–15).
    Ieee1394 {
        /// EUI-64 NAME.
        eui64: u64,
    },
    /// Any other protocol, or a format code this crate does not decode: the whole 24-byte
    /// TransportID.
    Other {
        /// PROTOCOL IDENTIFIER (byte 0 bits 3–0).
        protocol: u8,
        /// The complete TransportID, byte 0 included.
        bytes: Vec<u8>,
    },
}

/// TransportID protocol identifiers (SPC-4 §7.6.1 table "PROTOCOL IDENTIFIER values").
mod protocol {
    pub const FIBRE_CHANNEL: u8 = 0x0;
    pub const IEEE_1394: u8 = 0x3;
    pub const SRP: u8 = 0x4;
    pub const ISCSI: u8 = 0x5;
    pub const SAS: u8 = 0x6;
}

/// Separator between the iSCSI name and the ISID in an iSCSI initiator port TransportID
/// (SPC-4 §7.6.4.6, format 1).
const ISID_SEPARATOR: &str = ",i,0x";

/// Minimum total length of an iSCSI TransportID (SPC-4 §7.6.4.6: at least 20 bytes, a multiple
/// of 4).
const ISCSI_MIN_LEN: usize = 20;

impl TransportId {
    /// The protocol identifier.
    pub fn protocol(&self) -> u8 {
        match self {
            TransportId::FibreChannel { .. } => protocol::FIBRE_CHANNEL,
            TransportId::Iscsi { .. } => protocol::ISCSI,
            TransportId::Sas { .. } => protocol::SAS,
            TransportId::Srp { .. } => protocol::SRP,
            TransportId::Ieee1394 { .. } => protocol::IEEE_1394,
            TransportId::Other { protocol, .. } => *protocol,
        }
    }

    /// Encodes the TransportID (what [`parse_transport_id`] reads back). iSCSI names are
    /// NUL-terminated and padded to a multiple of 4, at least 20 bytes in all; `Other` is
    /// returned as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; FIXED_TRANSPORT_ID_LEN];
        match self {
            TransportId::FibreChannel { n_port_name } => {
                out[8..16].copy_from_slice(&n_port_name.to_be_bytes());
            }
            TransportId::Ieee1394 { eui64 } => {
                out[0] = protocol::IEEE_1394;
                out[8..16].copy_from_slice(&eui64.to_be_bytes());
            }
            TransportId::Srp { id } => {
                out[0] = protocol::SRP;
                out[8..24].copy_from_slice(id);
            }
            TransportId::Sas { address } => {
                out[0] = protocol::SAS;
                out[4..12].copy_from_slice(&address.to_be_bytes());
            }
            TransportId::Other { bytes, .. } => return bytes.clone(),
            TransportId::Iscsi { name, isid } => {
                let mut text = name.clone().into_bytes();
                let format = match isid {
                    Some(isid) => {
                        text.extend_from_slice(ISID_SEPARATOR.as_bytes());
                        text.extend_from_slice(isid.as_bytes());
                        1u8
                    }
                    None => 0,
                };
                text.push(0);
                let padded = text.len().next_multiple_of(4).max(ISCSI_MIN_LEN - 4);
                text.resize(padded, 0);
                text.truncate(usize::from(u16::MAX));
                let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
                let mut out = vec![(format << 6) | protocol::ISCSI, 0];
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&text);
                return out;
            }
        }
        out
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportId::FibreChannel { n_port_name } => write!(f, "fc {n_port_name:#018x}"),
            TransportId::Iscsi { name, isid: None } => f.write_str(name),
            TransportId::Iscsi {
                name,
                isid: Some(isid),
            } => write!(f, "{name}{ISID_SEPARATOR}{isid}"),
            TransportId::Sas { address } => write!(f, "sas {address:#018x}"),
            TransportId::Srp { id } => write!(f, "srp 0x{}", hex::encode(id)),
            TransportId::Ieee1394 { eui64 } => write!(f, "ieee1394 {eui64:#018x}"),
            TransportId::Other { protocol, bytes } => {
                write!(f, "protocol {protocol:#x} {}", hex::encode(bytes))
            }
        }
    }
}

/// Big-endian `u16` at `at`; the caller has checked the length.
fn be16(data: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&data[at..at + 2]);
    u16::from_be_bytes(b)
}

/// Big-endian `u32` at `at`; the caller has checked the length.
fn be32(data: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Big-endian `u64` at `at`; the caller has checked the length.
fn be64(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[at..at + 8]);
    u64::from_be_bytes(b)
}

/// Decodes one TransportID at the start of `data`; returns it and the bytes it took.
///
/// iSCSI TransportIDs take 4 + ADDITIONAL LENGTH bytes and must hold a NUL-terminated UTF-8
/// name (format 0) or `name,i,0x<hex isid>` (format 1); every other protocol takes 24 bytes.
/// Known protocols with a format code other than 0 decode as [`TransportId::Other`].
pub fn parse_transport_id(data: &[u8]) -> Result<(TransportId, usize), PrParseError> {
    let got = data.len();
    let Some(&first) = data.first() else {
        return Err(PrParseError::Truncated {
            needed: FIXED_TRANSPORT_ID_LEN,
            got,
        });
    };
    let format = first >> 6;
    let proto = first & 0x0F;
    if proto == protocol::ISCSI {
        if got < 4 {
            return Err(PrParseError::Truncated {
                needed: ISCSI_MIN_LEN,
                got,
            });
        }
        let total = 4 + usize::from(be16(data, 2));
        if got < total {
            return Err(PrParseError::Truncated { needed: total, got });
        }
        let field = &data[4..total];
        let Some(nul) = field.iter().position(|&b| b == 0) else {
            return Err(PrParseError::BadTransportId(
                "iscsi name is not null-terminated",
            ));
        };
        let text = std::str::from_utf8(&field[..nul])
            .map_err(|_| PrParseError::BadTransportId("iscsi name is not utf-8"))?;
        let (name, isid) = match format {
            0 => (text, None),
            1 => {
                let (name, isid) =
                    text.split_once(ISID_SEPARATOR)
                        .ok_or(PrParseError::BadTransportId(
                            "iscsi port transport id without ,i,0x",
                        ))?;
                if isid.is_empty() || !isid.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(PrParseError::BadTransportId("iscsi isid is not hex"));
                }
                (name, Some(isid.to_owned()))
            }
            _ => {
                return Err(PrParseError::BadTransportId(
                    "unknown iscsi transport id format",
                ));
            }
        };
        if name.is_empty() {
            return Err(PrParseError::BadTransportId("empty iscsi name"));
        }
        let id = TransportId::Iscsi {
            name: name.to_owned(),
            isid,
        };
        return Ok((id, total));
    }
    let Some(b) = data.get(..FIXED_TRANSPORT_ID_LEN) else {
        return Err(PrParseError::Truncated {
            needed: FIXED_TRANSPORT_ID_LEN,
            got,
        });
    };
    let id = match (format, proto) {
        (0, protocol::FIBRE_CHANNEL) => TransportId::FibreChannel {
            n_port_name: be64(b, 8),
        },
        (0, protocol::IEEE_1394) => TransportId::Ieee1394 { eui64: be64(b, 8) },
        (0, protocol::SRP) => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&b[8..24]);
            TransportId::Srp { id }
        }
        (0, protocol::SAS) => TransportId::Sas {
            address: be64(b, 4),
        },
        (_, protocol) => TransportId::Other {
            protocol,
            bytes: b.to_vec(),
        },
    };
    Ok((id, FIXED_TRANSPORT_ID_LEN))
}

/// Splits READ KEYS / READ RESERVATION / READ FULL STATUS data into PRGENERATION and the
/// ADDITIONAL LENGTH bytes that follow the header.
fn header(data: &[u8]) -> Result<(u32, &[u8]), PrParseError> {
    let got = data.len();
    if got < IN_HEADER_LEN {
        return Err(PrParseError::Truncated {
            needed: IN_HEADER_LEN,
            got,
        });
    }
    let additional = usize::try_from(be32(data, 4)).unwrap_or(usize::MAX);
    let needed = IN_HEADER_LEN.saturating_add(additional);
    match data.get(IN_HEADER_LEN..needed) {
        Some(body) => Ok((be32(data, 0), body)),
        None => Err(PrParseError::Truncated { needed, got }),
    }
}

/// Decodes READ KEYS parameter data (SPC-4 §6.15.2): PRGENERATION (bytes 0–3), ADDITIONAL
/// LENGTH (4–7, a multiple of 8), then one 8-byte key per registration.
pub fn parse_read_keys(data: &[u8]) -> Result<Keys, PrParseError> {
    let (generation, body) = header(data)?;
    if body.len() % 8 != 0 {
        return Err(PrParseError::BadLength {
            field: "read keys additional length",
            value: body.len(),
        });
    }
    let keys = body
        .chunks_exact(8)
        .map(|k| ReservationKey(be64(k, 0)))
        .collect();
    Ok(Keys { generation, keys })
}

/// Length of the reservation descriptor in READ RESERVATION data.
const RESERVATION_DESCRIPTOR_LEN: usize = 16;

/// Decodes READ RESERVATION parameter data (SPC-4 §6.15.3): the header, then either nothing
/// (ADDITIONAL LENGTH 0, no reservation) or a 16-byte descriptor: key (bytes 8–15), SCOPE and
/// TYPE (byte 21). Any other ADDITIONAL LENGTH, or an invalid type, is an error.
pub fn parse_read_reservation(data: &[u8]) -> Result<Reservation, PrParseError> {
    let (generation, body) = header(data)?;
    let holder = match body.len() {
        0 => None,
        RESERVATION_DESCRIPTOR_LEN => {
            let code = body[13] & 0x0F;
            Some(ReservationHolder {
                key: ReservationKey(be64(body, 0)),
                scope: body[13] >> 4,
                kind: PrType::from_scsi_code(code).ok_or(PrParseError::BadType(code))?,
            })
        }
        other => {
            return Err(PrParseError::BadLength {
                field: "read reservation additional length",
                value: other,
            });
        }
    };
    Ok(Reservation { generation, holder })
}

/// Length of REPORT CAPABILITIES parameter data (SPC-4 §6.15.4: LENGTH = 8).
const CAPABILITIES_LEN: usize = 8;

/// Decodes REPORT CAPABILITIES parameter data (SPC-4 §6.15.4): LENGTH (bytes 0–1, at least 8),
/// byte 2 (CRH bit 4, SIP_C bit 3, ATP_C bit 2, PTPL_C bit 0), byte 3 (TMV bit 7, ALLOW
/// COMMANDS bits 6–4, PTPL_A bit 0), type mask (bytes 4–5).
pub fn parse_report_capabilities(data: &[u8]) -> Result<Capabilities, PrParseError> {
    let got = data.len();
    if got < 2 {
        return Err(PrParseError::Truncated {
            needed: CAPABILITIES_LEN,
            got,
        });
    }
    let len = usize::from(be16(data, 0));
    if len < CAPABILITIES_LEN {
        return Err(PrParseError::BadLength {
            field: "report capabilities length",
            value: len,
        });
    }
    if got < len {
        return Err(PrParseError::Truncated { needed: len, got });
    }
    let (b2, b3) = (data[2], data[3]);
    let raw_type_mask = be16(data, 4);
    let tmv = b3 & 0x80 != 0;
    let types = match tmv {
        true => PrType::ALL
            .into_iter()
            .filter(|t| raw_type_mask & t.type_mask_bit() != 0)
            .collect(),
        false => Vec::new(),
    };
    Ok(Capabilities {
        crh: b2 & 0x10 != 0,
        sip_c: b2 & 0x08 != 0,
        atp_c: b2 & 0x04 != 0,
        ptpl_c: b2 & 0x01 != 0,
        tmv,
        allow_commands: (b3 >> 4) & 0x07,
        ptpl_a: b3 & 0x01 != 0,
        types,
        raw_type_mask,
    })
}

/// Length of a full status descriptor before its TransportID.
const STATUS_DESCRIPTOR_FIXED_LEN: usize = 24;

/// Decodes READ FULL STATUS parameter data (SPC-4 §6.15.5): the header, then descriptors of
/// key (bytes 0–7), ALL_TG_PT and R_HOLDER (byte 12 bits 1, 0), SCOPE and TYPE (byte 13),
/// RELATIVE TARGET PORT IDENTIFIER (18–19), ADDITIONAL DESCRIPTOR LENGTH (20–23) and the
/// TransportID. A descriptor that runs past ADDITIONAL LENGTH, a TransportID longer than its
/// descriptor, or a holder with an invalid type is an error.
pub fn parse_read_full_status(data: &[u8]) -> Result<FullStatus, PrParseError> {
    let (generation, mut rest) = header(data)?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        if rest.len() < STATUS_DESCRIPTOR_FIXED_LEN {
            return Err(PrParseError::BadLength {
                field: "full status descriptor length",
                value: rest.len(),
            });
        }
        let additional = usize::try_from(be32(rest, 20)).unwrap_or(usize::MAX);
        let end = STATUS_DESCRIPTOR_FIXED_LEN.saturating_add(additional);
        let Some(tid_bytes) = rest.get(STATUS_DESCRIPTOR_FIXED_LEN..end) else {
            return Err(PrParseError::BadLength {
                field: "full status additional descriptor length",
                value: additional,
            });
        };
        let (transport_id, _) = parse_transport_id(tid_bytes).map_err(|e| match e {
            PrParseError::Truncated { .. } => {
                PrParseError::BadTransportId("longer than its full status descriptor")
            }
            other => other,
        })?;
        let holder = rest[12] & 0x01 != 0;
        let code = rest[13] & 0x0F;
        let kind = match holder {
            true => Some(PrType::from_scsi_code(code).ok_or(PrParseError::BadType(code))?),
            false => None,
        };
        entries.push(StatusEntry {
            key: ReservationKey(be64(rest, 0)),
            all_tg_pt: rest[12] & 0x02 != 0,
            holder,
            scope: rest[13] >> 4,
            kind,
            relative_target_port: be16(rest, 18),
            transport_id,
        });
        rest = &rest[end..];
    }
    Ok(FullStatus {
        generation,
        entries,
    })
}

/// The PERSISTENT RESERVE OUT CDB and parameter list for one command, ready to send.
pub fn out_command(
    action: OutAction,
    kind: Option<PrType>,
    params: &OutParams,
) -> ([u8; cdb::CDB10_LEN], [u8; OUT_PARAMETERS_LEN]) {
    let len = u32::try_from(OUT_PARAMETERS_LEN).unwrap_or(u32::MAX);
    (
        cdb::persistent_reserve_out(action, scope_type(kind), len),
        out_parameters(params),
    )
}

#[cfg(test)]
mod tests;
