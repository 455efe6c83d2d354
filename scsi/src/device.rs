//! [`Device`]: an open SCSI node, and the one place SCSI commands are issued.
//!
//! The node is opened read-only with `O_NONBLOCK`, as udev's `scsi_id` does: `SG_IO` needs no
//! write access for INQUIRY or PERSISTENT RESERVE, `O_NONBLOCK` keeps the open from waiting on
//! removable media, and closing a descriptor that was opened for writing makes udev re-probe
//! the disk (the `inotify` "close after write" watch), which a read-only open avoids.
//!
//! Every command goes through the private `Device::execute`, which turns the `sg_io_hdr`
//! completion into a [`ScsiError`] by these rules, in order:
//!
//! 1. ioctl errno: `ENOTTY` → [`ScsiError::NotScsi`], any other → [`ScsiError::Io`].
//! 2. `host_status` ≠ 0, or `driver_status` other than OK / `DRIVER_SENSE` →
//!    [`ScsiError::Transport`].
//! 3. status GOOD or CONDITION MET → success.
//! 4. status RESERVATION CONFLICT → [`ScsiError::ReservationConflict`].
//! 5. CHECK CONDITION (or COMMAND TERMINATED, or `DRIVER_SENSE` with any status), by sense key:
//!    RECOVERED ERROR (or NO SENSE on a GOOD status) → success; UNIT ATTENTION → retried up to
//!    [`UNIT_ATTENTION_RETRIES`] times, then [`ScsiError::UnitAttention`]; ILLEGAL REQUEST →
//!    [`ScsiError::IllegalRequest`]; other keys → [`ScsiError::Check`]; undecodable sense →
//!    [`ScsiError::Status`].
//! 6. any other status → [`ScsiError::Status`].
//!
//! The rules themselves are the pure function `classify`, tested without a device. `SG_IO`
//! cannot run on the development host (no SCSI layer); [`Device`] is exercised inside QEMU
//! guests.
//!
//! Persistent reservations (`pr_read_keys`, `pr_register`, …, and the
//! [`PersistentReservations`](crate::PersistentReservations) implementation) live in the
//! private `pr` submodule and use the same choke point.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cdb::{self, Opcode};
use crate::error::ScsiError;
use crate::inquiry::{PRODUCT_LEN, StandardInquiry, VENDOR_LEN};
use crate::sense::{Sense, SenseKey};
use crate::sys::{self, DataDir, SENSE_LEN, SgIoResult};
use crate::vpd;

mod pr;
pub use pr::PR_IN_FIRST_ALLOC_LEN;

/// How many times a command that ends in UNIT ATTENTION is sent again. A unit attention is
/// reported once per initiator and condition, so a few retries clear a burst (power on, then
/// reservations preempted, then LUN inventory changed).
pub const UNIT_ATTENTION_RETRIES: usize = 3;

/// `SCSI_GENERIC_MAJOR` from `<linux/major.h>`: the `/dev/sgN` character devices.
const SCSI_GENERIC_MAJOR: u32 = 21;

/// SAM status codes (SAM-5 §5.3 "Status codes"), after masking with 0x7E.
const STATUS_GOOD: u8 = 0x00;
const STATUS_CHECK_CONDITION: u8 = 0x02;
const STATUS_CONDITION_MET: u8 = 0x04;
const STATUS_RESERVATION_CONFLICT: u8 = 0x18;
const STATUS_COMMAND_TERMINATED: u8 = 0x22;

/// `DRIVER_SENSE` in the low nibble of `driver_status`: the sense buffer is valid.
const DRIVER_SENSE: u16 = 0x08;

/// An open SCSI block device (`/dev/sdX`, a multipath `dm-N` that passes `SG_IO` through) or
/// SCSI generic node (`/dev/sgN`).
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    timeout_ms: u32,
}

/// A successful command's completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    /// Bytes of the data-in buffer the device filled (`dxfer_len - resid`).
    pub(crate) transferred: usize,
    /// Unit attentions met and retried on the way, oldest first. The persistent reservation
    /// layer reads these (e.g. "registrations preempted").
    pub(crate) unit_attentions: Vec<Sense>,
}

/// What one `SG_IO` completion means; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Good,
    ReservationConflict,
    UnitAttention(Sense),
    IllegalRequest(Sense),
    Check(Sense),
    Status(u8),
    Transport {
        host_status: u16,
        driver_status: u16,
    },
}

/// Classifies a completion; `sense` is the part of the sense buffer the kernel wrote.
fn classify(res: &SgIoResult, sense: &[u8]) -> Outcome {
    let driver = res.driver_status & 0x0F;
    if res.host_status != 0 || (driver != 0 && driver != DRIVER_SENSE) {
        return Outcome::Transport {
            host_status: res.host_status,
            driver_status: res.driver_status,
        };
    }
    let status = res.status & 0x7E;
    let has_sense = matches!(status, STATUS_CHECK_CONDITION | STATUS_COMMAND_TERMINATED)
        || driver == DRIVER_SENSE;
    if has_sense {
        return match Sense::parse(sense) {
            Some(s) => match s.key {
                SenseKey::RecoveredError => Outcome::Good,
                SenseKey::NoSense if status == STATUS_GOOD => Outcome::Good,
                SenseKey::UnitAttention => Outcome::UnitAttention(s),
                SenseKey::IllegalRequest => Outcome::IllegalRequest(s),
                _ => Outcome::Check(s),
            },
            None if status == STATUS_GOOD => Outcome::Good,
            None => Outcome::Status(res.status),
        };
    }
    match status {
        STATUS_GOOD | STATUS_CONDITION_MET => Outcome::Good,
        STATUS_RESERVATION_CONFLICT => Outcome::ReservationConflict,
        _ => Outcome::Status(res.status),
    }
}

/// Opens a device node read-only and non-blocking (a read-write close would make udev
/// re-probe the disk), with its metadata.
pub(crate) fn open_node(path: &Path) -> Result<(std::fs::Metadata, std::fs::File), ScsiError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| Ok((file.metadata()?, file)))
        .map_err(|source| ScsiError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl Device {
    /// Timeout for each command unless [`Device::set_timeout`] changes it.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Opens `path` read-only and non-blocking. It must be a block device or a SCSI generic
    /// character device (major 21); anything else is [`ScsiError::NotScsi`]. Whether a block
    /// device really speaks SCSI shows at the first command (`ENOTTY` → `NotScsi`).
    pub fn open(path: impl AsRef<Path>) -> Result<Device, ScsiError> {
        let path = path.as_ref().to_path_buf();
        let (meta, file) = open_node(&path)?;
        let ft = meta.file_type();
        let sg = ft.is_char_device() && libc::major(meta.rdev()) == SCSI_GENERIC_MAJOR;
        if !(ft.is_block_device() || sg) {
            return Err(ScsiError::NotScsi { path });
        }
        Ok(Device {
            file,
            path,
            timeout_ms: duration_ms(Self::DEFAULT_TIMEOUT),
        })
    }

    /// The path the device was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the per-command timeout (rounded down to milliseconds, at most `u32::MAX` ms).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout_ms = duration_ms(timeout);
    }

    /// TEST UNIT READY: `Ok` when the logical unit is ready.
    pub fn test_unit_ready(&self) -> Result<(), ScsiError> {
        self.execute(&cdb::test_unit_ready(), DataDir::None)
            .map(drop)
    }

    /// Diagnostics and benchmarks only: sends `cdb`, a command with a data-in phase (or none,
    /// for an empty `buf`), through the same choke point as every other command (unit
    /// attentions retried, status mapped to [`ScsiError`]) and returns how many bytes of `buf`
    /// the device filled. Nothing is built or parsed, so this measures what the transport
    /// costs; real work uses the typed methods (`pr_read_keys`, `inquiry_vpd`, …).
    pub fn pass_through_in(&self, cdb: &[u8], buf: &mut [u8]) -> Result<usize, ScsiError> {
        let dir = match buf.is_empty() {
            true => DataDir::None,
            false => DataDir::FromDev(buf),
        };
        self.execute(cdb, dir).map(|done| done.transferred)
    }

    /// Standard INQUIRY: device type, vendor, product and revision.
    pub fn inquiry_standard(&self) -> Result<StandardInquiry, ScsiError> {
        let op = Opcode(cdb::INQUIRY);
        let data = self.inquiry_raw(None, 36)?;
        StandardInquiry::parse(&data).map_err(|source| ScsiError::Inquiry {
            path: self.path.clone(),
            op,
            source,
        })
    }

    /// The whole VPD page `page`, header included, checked for page code and length.
    ///
    /// Asks for 254 bytes first (as `scsi_id` does), then again with the page's declared
    /// length if it is longer.
    pub fn inquiry_vpd(&self, page: u8) -> Result<Vec<u8>, ScsiError> {
        let first = cdb::INQUIRY_FIRST_ALLOC_LEN;
        let mut data = self.inquiry_raw(Some(page), first)?;
        if let Some(declared) = vpd::declared_len(&data)
            && declared > data.len()
            && data.len() == usize::from(first)
        {
            let alloc = u16::try_from(declared).unwrap_or(u16::MAX);
            data = self.inquiry_raw(Some(page), alloc)?;
        }
        let len = vpd::page_payload(&data, page)
            .map_err(|source| ScsiError::Vpd {
                path: self.path.clone(),
                op: Opcode(cdb::INQUIRY),
                source,
            })?
            .len();
        data.truncate(vpd::HEADER_LEN + len);
        Ok(data)
    }

    /// The string `scsi_id --whitelisted --replace-whitespace --device=DEV` prints for this
    /// device (`None` where it prints nothing), from the same INQUIRY commands it sends: see
    /// [`vpd::scsi_id_wwid`].
    ///
    /// Unlike `scsi_id`, only ILLEGAL REQUEST makes a page count as absent; any other failure
    /// is returned as an error instead of silently producing a different WWID.
    pub fn scsi_id_wwid(&self) -> Result<Option<String>, ScsiError> {
        let len = u16::try_from(vpd::SCSI_ID_INQUIRY_LEN).unwrap_or(u16::MAX);
        let std = self.inquiry_raw(None, len)?;
        let mut vendor = [0u8; VENDOR_LEN];
        let mut model = [0u8; PRODUCT_LEN];
        for (dst, src) in vendor
            .iter_mut()
            .chain(model.iter_mut())
            .zip(std.iter().skip(8))
        {
            *dst = *src;
        }
        let page0 = self.optional_page(0x00, len)?.unwrap_or_default();
        let Some(pages) = vpd::scsi_id_pages(&page0, &vendor) else {
            return Ok(None);
        };
        let vpd83 = match pages.device_id {
            true => self.optional_page(vpd::PAGE_DEVICE_ID, len)?,
            false => None,
        };
        if let Some(p83) = &vpd83
            && let Some(wwid) = vpd::scsi_id_from_device_id(p83, &vendor, &model)
        {
            return Ok(Some(wwid));
        }
        let vpd80 = match pages.unit_serial {
            true => self.optional_page(vpd::PAGE_UNIT_SERIAL, len)?,
            false => None,
        };
        Ok(vpd::scsi_id_wwid(
            vpd83.as_deref(),
            vpd80.as_deref(),
            &vendor,
            &model,
        ))
    }

    /// A VPD page's raw reply, or `None` if the device answers ILLEGAL REQUEST.
    fn optional_page(&self, page: u8, alloc: u16) -> Result<Option<Vec<u8>>, ScsiError> {
        match self.inquiry_raw(Some(page), alloc) {
            Ok(data) => Ok(Some(data)),
            Err(ScsiError::IllegalRequest { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One INQUIRY (standard for `None`, else EVPD for that page); the bytes the device sent.
    fn inquiry_raw(&self, page: Option<u8>, alloc: u16) -> Result<Vec<u8>, ScsiError> {
        let cdb = match page {
            None => cdb::inquiry_standard(alloc),
            Some(page) => cdb::inquiry_vpd(page, alloc),
        };
        let mut buf = vec![0u8; usize::from(alloc)];
        let done = self.execute(&cdb, DataDir::FromDev(&mut buf))?;
        buf.truncate(done.transferred);
        Ok(buf)
    }

    /// The choke point: sends `cdb` with `dir` through `SG_IO`, retries unit attentions, and
    /// maps every failure to a [`ScsiError`] naming this device and the opcode.
    pub(crate) fn execute(
        &self,
        cdb: &[u8],
        mut dir: DataDir<'_>,
    ) -> Result<Completion, ScsiError> {
        let op = Opcode(cdb.first().copied().unwrap_or(0));
        let path = || self.path.clone();
        let mut unit_attentions = Vec::new();
        loop {
            let mut sense = [0u8; SENSE_LEN];
            let res = sys::sg_io(
                self.file.as_fd(),
                cdb,
                dir.reborrow(),
                &mut sense,
                self.timeout_ms,
            )
            .map_err(|source| match source {
                nix::Error::ENOTTY => ScsiError::NotScsi { path: path() },
                source => ScsiError::Io {
                    path: path(),
                    op,
                    source,
                },
            })?;
            let written = usize::from(res.sb_len_wr).min(SENSE_LEN);
            return Err(match classify(&res, &sense[..written]) {
                Outcome::Good => {
                    let resid = usize::try_from(res.resid).unwrap_or(0);
                    return Ok(Completion {
                        transferred: dir.len().saturating_sub(resid),
                        unit_attentions,
                    });
                }
                Outcome::UnitAttention(sense) if unit_attentions.len() < UNIT_ATTENTION_RETRIES => {
                    unit_attentions.push(sense);
                    continue;
                }
                Outcome::UnitAttention(sense) => ScsiError::UnitAttention {
                    path: path(),
                    op,
                    sense,
                },
                Outcome::ReservationConflict => ScsiError::ReservationConflict { path: path(), op },
                Outcome::IllegalRequest(sense) => ScsiError::IllegalRequest {
                    path: path(),
                    op,
                    sense,
                },
                Outcome::Check(sense) => ScsiError::Check {
                    path: path(),
                    op,
                    sense,
                },
                Outcome::Status(status) => ScsiError::Status {
                    path: path(),
                    op,
                    status,
                },
                Outcome::Transport {
                    host_status,
                    driver_status,
                } => ScsiError::Transport {
                    path: path(),
                    op,
                    host_status,
                    driver_status,
                },
            });
        }
    }
}

/// Milliseconds in `d`, saturating at `u32::MAX`.
fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sense::asc;

    fn res(status: u8, host_status: u16, driver_status: u16) -> SgIoResult {
        SgIoResult {
            status,
            host_status,
            driver_status,
            sb_len_wr: 18,
            resid: 0,
            duration: 1,
        }
    }

    fn fixed_sense(key: u8, asc: u8, ascq: u8) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = key;
        s[7] = 10;
        s[12] = asc;
        s[13] = ascq;
        s
    }

    #[test]
    fn good_and_condition_met() {
        assert_eq!(classify(&res(0x00, 0, 0), &[]), Outcome::Good);
        assert_eq!(classify(&res(0x04, 0, 0), &[]), Outcome::Good);
    }

    #[test]
    fn reservation_conflict() {
        assert_eq!(
            classify(&res(0x18, 0, 0), &[]),
            Outcome::ReservationConflict
        );
    }

    #[test]
    fn check_conditions_by_key() {
        let ua = fixed_sense(0x06, 0x2A, 0x03);
        match classify(&res(0x02, 0, 0x08), &ua) {
            Outcome::UnitAttention(s) => assert_eq!(s.asc_ascq(), asc::RESERVATIONS_PREEMPTED),
            other => panic!("{other:?}"),
        }
        let ir = fixed_sense(0x05, 0x24, 0x00);
        assert!(matches!(
            classify(&res(0x02, 0, 0x08), &ir),
            Outcome::IllegalRequest(s) if s.asc_ascq() == asc::INVALID_FIELD_IN_CDB
        ));
        let nr = fixed_sense(0x02, 0x04, 0x0B);
        assert!(matches!(
            classify(&res(0x02, 0, 0), &nr),
            Outcome::Check(s) if s.key == SenseKey::NotReady
        ));
        let rec = fixed_sense(0x01, 0x00, 0x00);
        assert_eq!(classify(&res(0x02, 0, 0x08), &rec), Outcome::Good);
        // CHECK CONDITION without usable sense.
        assert_eq!(classify(&res(0x02, 0, 0), &[]), Outcome::Status(0x02));
        // DRIVER_SENSE with a lost status still reports the sense.
        assert!(matches!(
            classify(&res(0x00, 0, 0x08), &ua),
            Outcome::UnitAttention(_)
        ));
    }

    #[test]
    fn transport_failures() {
        // DID_NO_CONNECT
        assert_eq!(
            classify(&res(0x00, 0x01, 0), &[]),
            Outcome::Transport {
                host_status: 0x01,
                driver_status: 0
            }
        );
        // DRIVER_TIMEOUT
        assert_eq!(
            classify(&res(0x00, 0, 0x06), &[]),
            Outcome::Transport {
                host_status: 0,
                driver_status: 0x06
            }
        );
        // A transport failure wins over a status that may be stale.
        assert!(matches!(
            classify(&res(0x18, 0x03, 0), &[]),
            Outcome::Transport { .. }
        ));
    }

    #[test]
    fn other_statuses() {
        assert_eq!(classify(&res(0x08, 0, 0), &[]), Outcome::Status(0x08)); // BUSY
        assert_eq!(classify(&res(0x28, 0, 0), &[]), Outcome::Status(0x28)); // TASK SET FULL
    }

    #[test]
    fn open_rejects_non_scsi_nodes() {
        let dir = std::env::temp_dir();
        match Device::open(&dir) {
            Err(ScsiError::NotScsi { path }) => assert_eq!(path, dir),
            other => panic!("{other:?}"),
        }
        // /dev/null is a character device, but not major 21.
        assert!(matches!(
            Device::open("/dev/null"),
            Err(ScsiError::NotScsi { .. })
        ));
        let missing = Device::open("/nonexistent/disklock-scsi-test").unwrap_err();
        assert!(matches!(missing, ScsiError::Open { .. }));
        assert_eq!(
            missing.to_string(),
            "cannot open /nonexistent/disklock-scsi-test"
        );
    }

    #[test]
    fn error_messages() {
        let sense = Sense::parse(&fixed_sense(0x05, 0x24, 0x00)).expect("decodes");
        let e = ScsiError::IllegalRequest {
            path: "/dev/sda".into(),
            op: Opcode(cdb::INQUIRY),
            sense,
        };
        assert_eq!(
            e.to_string(),
            "inquiry (0x12) on /dev/sda rejected: illegal request, asc/ascq 0x24/0x00 (invalid field in cdb)"
        );
        let e = ScsiError::ReservationConflict {
            path: "/dev/sdb".into(),
            op: Opcode(cdb::PERSISTENT_RESERVE_OUT),
        };
        assert_eq!(
            e.to_string(),
            "reservation conflict: persistent reserve out (0x5f) on /dev/sdb"
        );
        let e = ScsiError::Io {
            path: "/dev/sdc".into(),
            op: Opcode(cdb::INQUIRY),
            source: nix::Error::EIO,
        };
        assert_eq!(e.to_string(), "sg_io inquiry (0x12) on /dev/sdc failed");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn duration_conversion() {
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
