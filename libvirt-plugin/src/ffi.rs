//! libvirt's lock driver ABI, declared here (libvirt's `src/locking/lock_driver.h` is
//! internal and never installed), and the eight callbacks that copy libvirt's arguments
//! into Rust values for [`crate::plugin`]. The crate's only `unsafe` is in this module.
//!
//! The layout is pinned below for LP64 (x86_64, aarch64): the driver table is 72 bytes
//! (two `unsigned int`, eight function pointers), a parameter 32 (an `int` type, a key, a
//! 16-byte union), the lock manager object 16 (the driver and our private pointer).
//!
//! Every callback runs under [`guard`]: a panic is caught and becomes -1 (an unwind into
//! libvirtd's C frames is undefined behaviour, an abort would take libvirtd down), and an
//! error goes to libvirt through `virReportErrorHelper`, looked up with `dlsym` in
//! `drvInit` (libvirt exports it from libvirt.so; its version node changes with every
//! libvirt build, so the plugin does not link against it). Without it the error is not
//! shown and libvirt says "An error occurred, but the cause is unknown".

#![allow(unsafe_code)]

// catch_unwind is what keeps a panic out of libvirtd; with panic = "abort" a panic would
// kill libvirtd instead.
#[cfg(panic = "abort")]
compile_error!("the libvirt plugin must be built with panic = \"unwind\"");

use std::ffi::{CStr, CString, c_char, c_int, c_longlong, c_uint, c_ulonglong, c_void};
use std::mem::{offset_of, size_of};
use std::os::unix::ffi::OsStrExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::OnceLock;

use crate::domain::{Domain, Param, ParamValue};
use crate::error::{ErrorCode, PluginError, VIR_FROM_LOCKING};
use crate::plugin;

type DrvInit = unsafe extern "C" fn(c_uint, *const c_char, c_uint) -> c_int;
type DrvDeinit = unsafe extern "C" fn() -> c_int;
type DrvNew = unsafe extern "C" fn(*mut LockManager, c_uint, usize, *mut RawParam, c_uint) -> c_int;
type DrvFree = unsafe extern "C" fn(*mut LockManager);
type DrvAddResource = unsafe extern "C" fn(
    *mut LockManager,
    c_uint,
    *const c_char,
    usize,
    *mut RawParam,
    c_uint,
) -> c_int;
type DrvAcquire =
    unsafe extern "C" fn(*mut LockManager, *const c_char, c_uint, c_int, *mut c_int) -> c_int;
type DrvRelease = unsafe extern "C" fn(*mut LockManager, *mut *mut c_char, c_uint) -> c_int;
type DrvInquire = unsafe extern "C" fn(*mut LockManager, *mut *mut c_char, c_uint) -> c_int;

/// `struct _virLockDriver`.
#[repr(C)]
pub struct LockDriver {
    /// The newest ABI version the plugin implements (libvirt does not read it).
    pub version: c_uint,
    /// `VIR_LOCK_MANAGER_USES_STATE` or 0.
    pub flags: c_uint,
    drv_init: DrvInit,
    drv_deinit: DrvDeinit,
    drv_new: DrvNew,
    drv_free: DrvFree,
    drv_add_resource: DrvAddResource,
    drv_acquire: DrvAcquire,
    drv_release: DrvRelease,
    drv_inquire: DrvInquire,
}

/// `struct _virLockManager`: libvirt allocates it; `private_data` is ours.
#[repr(C)]
pub struct LockManager {
    driver: *mut LockDriver,
    private_data: *mut c_void,
}

/// `struct _virLockManagerParam`.
#[repr(C)]
pub struct RawParam {
    kind: c_int,
    key: *const c_char,
    value: RawParamValue,
}

/// The value union of `struct _virLockManagerParam`.
#[repr(C)]
#[derive(Clone, Copy)]
union RawParamValue {
    iv: c_int,
    l: c_longlong,
    ui: c_uint,
    ul: c_ulonglong,
    d: f64,
    str: *const c_char,
    uuid: [u8; 16],
}

// `VIR_LOCK_MANAGER_PARAM_TYPE_*`.
const PARAM_TYPE_STRING: c_int = 0;
const PARAM_TYPE_CSTRING: c_int = 1;
const PARAM_TYPE_INT: c_int = 2;
const PARAM_TYPE_LONG: c_int = 3;
const PARAM_TYPE_UINT: c_int = 4;
const PARAM_TYPE_ULONG: c_int = 5;
const PARAM_TYPE_DOUBLE: c_int = 6;
const PARAM_TYPE_UUID: c_int = 7;

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<LockDriver>() == 72);
    assert!(offset_of!(LockDriver, version) == 0);
    assert!(offset_of!(LockDriver, flags) == 4);
    assert!(offset_of!(LockDriver, drv_init) == 8);
    assert!(offset_of!(LockDriver, drv_deinit) == 16);
    assert!(offset_of!(LockDriver, drv_new) == 24);
    assert!(offset_of!(LockDriver, drv_free) == 32);
    assert!(offset_of!(LockDriver, drv_add_resource) == 40);
    assert!(offset_of!(LockDriver, drv_acquire) == 48);
    assert!(offset_of!(LockDriver, drv_release) == 56);
    assert!(offset_of!(LockDriver, drv_inquire) == 64);
    assert!(size_of::<LockManager>() == 16);
    assert!(offset_of!(LockManager, private_data) == 8);
    assert!(size_of::<RawParamValue>() == 16);
    assert!(size_of::<RawParam>() == 32);
    assert!(offset_of!(RawParam, key) == 8);
    assert!(offset_of!(RawParam, value) == 16);
};

/// The table libvirt looks up with `dlsym(handle, "virLockDriverImpl")`.
// SAFETY: no other symbol of this name exists in the plugin, and libvirt reads it as the
// `struct _virLockDriver` declared above.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImpl: LockDriver = LockDriver {
    version: plugin::ABI_VERSION,
    flags: 0,
    drv_init,
    drv_deinit,
    drv_new,
    drv_free,
    drv_add_resource,
    drv_acquire,
    drv_release,
    drv_inquire,
};

/// `virReportErrorHelper(domcode, errcode, file, func, line, fmt, ...)`.
type ReportErrorHelper =
    unsafe extern "C" fn(c_int, c_int, *const c_char, *const c_char, usize, *const c_char, ...);

/// Looked up once, in `drvInit` (libvirtd, before any domain's child is forked: `dlsym`
/// takes the loader's lock, which the child must not).
static REPORTER: OnceLock<Option<ReportErrorHelper>> = OnceLock::new();

fn resolve_reporter() {
    REPORTER.get_or_init(|| {
        // SAFETY: dlsym is called with the RTLD_DEFAULT pseudo-handle and a NUL-terminated
        // name; it only reads them.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"virReportErrorHelper".as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p is the address of libvirt's function `virReportErrorHelper`, whose C
        // type is `void (int, int, const char *, const char *, size_t, const char *, ...)`
        // (virerror.h, unchanged since 2011) — the type declared above; on Linux a function
        // pointer and a data pointer have the same size and representation.
        Some(unsafe { std::mem::transmute::<*mut c_void, ReportErrorHelper>(p) })
    });
}

/// Hands `message` to libvirt as the current error, or drops it without libvirt.
fn report(callback: &CStr, code: ErrorCode, message: &str) {
    let Some(Some(helper)) = REPORTER.get() else {
        return;
    };
    let Ok(msg) = CString::new(message.replace('\0', "\\0")) else {
        return;
    };
    // SAFETY: helper is virReportErrorHelper (see resolve_reporter). The format "%s"
    // reads exactly one `const char *` argument, msg, NUL-terminated and alive until the
    // call returns; file and func are NUL-terminated static strings.
    unsafe {
        helper(
            VIR_FROM_LOCKING,
            code as c_int,
            c"disklock-libvirt".as_ptr(),
            callback.as_ptr(),
            line!() as usize,
            c"%s".as_ptr(),
            msg.as_ptr(),
        );
    }
}

/// Runs a callback's body: 0 on success; -1 after reporting an error or a panic.
fn guard(callback: &CStr, body: impl FnOnce() -> Result<(), PluginError>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            report(callback, e.code(), &e.message());
            -1
        }
        Err(_) => {
            report(
                callback,
                ErrorCode::Internal,
                "disklock: the lock manager plugin failed (a bug: it panicked)",
            );
            -1
        }
    }
}

/// A C string argument, copied; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn opt_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and NUL-terminated and valid by this function's contract.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// libvirt's parameter array, copied.
///
/// # Safety
/// `params` is NULL with `n` 0, or points to `n` initialised parameters whose keys and
/// string values are NUL-terminated strings (or NULL values), all valid for the call.
unsafe fn copy_params(params: *const RawParam, n: usize) -> Result<Vec<Param>, PluginError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if params.is_null() {
        return Err(PluginError::BadCall(format!("{n} parameters at NULL")));
    }
    // SAFETY: non-NULL, n initialised elements by this function's contract.
    let raw = unsafe { std::slice::from_raw_parts(params, n) };
    raw.iter()
        .map(|p| {
            // SAFETY: a NUL-terminated key (or NULL), valid for the call (contract).
            let key = unsafe { opt_string(p.key) }
                .ok_or_else(|| PluginError::BadCall("a parameter without a key".into()))?;
            let v = p.value;
            // SAFETY (each arm): `kind` says which member libvirt wrote; for the number
            // members every bit pattern is a valid value, and a string member is a valid
            // string or NULL by this function's contract. libvirt writes `id` and `pid`
            // (declared UINT) through the `int` member, of the same size and bits.
            let value = match p.kind {
                PARAM_TYPE_STRING | PARAM_TYPE_CSTRING => {
                    // SAFETY: see above.
                    ParamValue::Str(unsafe { opt_string(v.str) })
                }
                // SAFETY: see above.
                PARAM_TYPE_INT => ParamValue::Int(unsafe { v.iv }),
                // SAFETY: see above.
                PARAM_TYPE_LONG => ParamValue::Long(unsafe { v.l }),
                // SAFETY: see above.
                PARAM_TYPE_UINT => ParamValue::UInt(unsafe { v.ui }),
                // SAFETY: see above.
                PARAM_TYPE_ULONG => ParamValue::ULong(unsafe { v.ul }),
                // SAFETY: see above.
                PARAM_TYPE_DOUBLE => ParamValue::Double(unsafe { v.d }),
                // SAFETY: see above.
                PARAM_TYPE_UUID => ParamValue::Uuid(unsafe { v.uuid }),
                k => {
                    return Err(PluginError::BadCall(format!(
                        "parameter {key} of unknown type {k}"
                    )));
                }
            };
            Ok(Param { key, value })
        })
        .collect()
}

/// The domain object `drvNew` stored in `man`.
///
/// # Safety
/// `man` is NULL or libvirt's lock manager object, valid for the call, whose private data
/// is NULL or was set by [`drv_new`] and not yet freed; libvirt runs one callback on an
/// object at a time.
unsafe fn domain<'a>(man: *mut LockManager) -> Result<&'a mut Domain, PluginError> {
    if man.is_null() {
        return Err(PluginError::BadCall("no lock manager object".into()));
    }
    // SAFETY: man is valid (contract).
    let p = unsafe { (*man).private_data }.cast::<Domain>();
    if p.is_null() {
        return Err(PluginError::BadCall(
            "a lock manager object without a domain".into(),
        ));
    }
    // SAFETY: p came from Box::into_raw in drv_new and is not freed (contract); nothing
    // else refers to it during this callback.
    Ok(unsafe { &mut *p })
}

unsafe extern "C" fn drv_init(version: c_uint, config_file: *const c_char, flags: c_uint) -> c_int {
    guard(c"drvInit", || {
        resolve_reporter();
        if flags != 0 {
            return Err(PluginError::BadCall(format!(
                "unsupported flags (0x{flags:x}) in drvInit"
            )));
        }
        let path = if config_file.is_null() {
            None
        } else {
            // SAFETY: libvirt passes the config file's path, NUL-terminated, valid for the
            // call; not NULL (checked).
            Some(unsafe { CStr::from_ptr(config_file) })
        };
        let path = path.map(|p| Path::new(std::ffi::OsStr::from_bytes(p.to_bytes())));
        plugin::init(version, path)
    })
}

unsafe extern "C" fn drv_deinit() -> c_int {
    // Nothing to free: the configuration stays until the library is unloaded.
    0
}

unsafe extern "C" fn drv_new(
    man: *mut LockManager,
    object_type: c_uint,
    nparams: usize,
    params: *mut RawParam,
    flags: c_uint,
) -> c_int {
    guard(c"drvNew", || {
        if man.is_null() {
            return Err(PluginError::BadCall("no lock manager object".into()));
        }
        // SAFETY: libvirt passes its parameter array of nparams entries, valid for the call.
        let params = unsafe { copy_params(params, nparams) }?;
        let d = plugin::new_domain(object_type, &params, flags)?;
        // SAFETY: man is libvirt's freshly allocated object (not NULL, checked), valid for
        // the call; its private data is ours to set, and drv_free takes it back.
        unsafe { (*man).private_data = Box::into_raw(Box::new(d)).cast() };
        Ok(())
    })
}

unsafe extern "C" fn drv_free(man: *mut LockManager) {
    // Cannot fail; a panic (there is none to expect) would still not unwind into libvirt.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if man.is_null() {
            return;
        }
        // SAFETY: man is libvirt's object, valid for the call; libvirt frees each once.
        let p = unsafe { std::ptr::replace(&raw mut (*man).private_data, std::ptr::null_mut()) };
        if !p.is_null() {
            // SAFETY: p came from Box::into_raw in drv_new and was not freed: it is reset
            // to NULL here, the only place that frees it.
            drop(unsafe { Box::from_raw(p.cast::<Domain>()) });
        }
    }));
}

unsafe extern "C" fn drv_add_resource(
    man: *mut LockManager,
    rtype: c_uint,
    name: *const c_char,
    nparams: usize,
    params: *mut RawParam,
    flags: c_uint,
) -> c_int {
    guard(c"drvAddResource", || {
        // SAFETY: libvirt passes the object drv_new filled in, valid for the call.
        let d = unsafe { domain(man) }?;
        // SAFETY: the resource's name, NUL-terminated, valid for the call (or NULL).
        let name = unsafe { opt_string(name) }
            .ok_or_else(|| PluginError::BadCall("a resource without a name".into()))?;
        // SAFETY: libvirt passes its parameter array of nparams entries, valid for the call.
        let params = unsafe { copy_params(params, nparams) }?;
        plugin::add_resource(d, rtype, &name, &params, flags)
    })
}

unsafe extern "C" fn drv_acquire(
    man: *mut LockManager,
    _state: *const c_char,
    flags: c_uint,
    action: c_int,
    _fd: *mut c_int,
) -> c_int {
    // No state is handed over (flags has no USES_STATE), and no fd: the daemon watches
    // the QEMU pid itself. libvirt presets *fd to -1.
    guard(c"drvAcquire", || {
        // SAFETY: libvirt passes the object drv_new filled in, valid for the call.
        let d = unsafe { domain(man) }?;
        plugin::acquire(d, flags, action)
    })
}

/// Sets `*state` to NULL: no state to hand back.
///
/// # Safety
/// `state` is NULL or writable for the call.
unsafe fn no_state(state: *mut *mut c_char) {
    if !state.is_null() {
        // SAFETY: writable (contract).
        unsafe { *state = std::ptr::null_mut() };
    }
}

unsafe extern "C" fn drv_release(
    man: *mut LockManager,
    state: *mut *mut c_char,
    flags: c_uint,
) -> c_int {
    guard(c"drvRelease", || {
        // SAFETY: libvirt passes NULL or a `char **` it reads afterwards.
        unsafe { no_state(state) };
        // SAFETY: libvirt passes the object drv_new filled in, valid for the call.
        let d = unsafe { domain(man) }?;
        plugin::release(d, flags)
    })
}

unsafe extern "C" fn drv_inquire(
    man: *mut LockManager,
    state: *mut *mut c_char,
    flags: c_uint,
) -> c_int {
    guard(c"drvInquire", || {
        // SAFETY: libvirt passes NULL or a `char **` it reads afterwards.
        unsafe { no_state(state) };
        // SAFETY: libvirt passes the object drv_new filled in, valid for the call.
        let d = unsafe { domain(man) }?;
        plugin::inquire(d, flags)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's calls, made the way libvirt makes them, on the exported table.
    #[test]
    fn the_table_takes_libvirts_calls() {
        let drv = &virLockDriverImpl;
        assert_eq!(drv.version, 1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("qemu-disklock.conf");
        std::fs::write(&conf, "auto_disk_leases = 1\n").unwrap();
        let conf = CString::new(conf.as_os_str().as_bytes()).unwrap();
        // SAFETY: the arguments are what libvirt passes: a version and a C string.
        assert_eq!(unsafe { (drv.drv_init)(2_000_000, conf.as_ptr(), 0) }, -1);
        // SAFETY: as above.
        assert_eq!(unsafe { (drv.drv_init)(1_000_000, conf.as_ptr(), 0) }, 0);

        let name = CString::new("web1").unwrap();
        let mut params = [
            RawParam {
                kind: PARAM_TYPE_UUID,
                key: c"uuid".as_ptr(),
                value: RawParamValue { uuid: [9; 16] },
            },
            RawParam {
                kind: PARAM_TYPE_STRING,
                key: c"name".as_ptr(),
                value: RawParamValue { str: name.as_ptr() },
            },
            RawParam {
                kind: PARAM_TYPE_UINT,
                key: c"id".as_ptr(),
                value: RawParamValue { iv: 1 },
            },
            RawParam {
                kind: PARAM_TYPE_UINT,
                key: c"pid".as_ptr(),
                value: RawParamValue { iv: 4242 },
            },
            RawParam {
                kind: PARAM_TYPE_CSTRING,
                key: c"uri".as_ptr(),
                value: RawParamValue {
                    str: std::ptr::null(),
                },
            },
        ];
        let mut man = LockManager {
            driver: std::ptr::null_mut(),
            private_data: std::ptr::null_mut(),
        };
        // SAFETY: man and params are valid for the call, as libvirt's are.
        let rc = unsafe { (drv.drv_new)(&mut man, 0, params.len(), params.as_mut_ptr(), 0) };
        assert_eq!(rc, 0);
        // SAFETY: as above; a disk resource has no parameters.
        let rc = unsafe {
            (drv.drv_add_resource)(&mut man, 0, c"/img".as_ptr(), 0, std::ptr::null_mut(), 2)
        };
        assert_eq!(rc, 0);
        // SAFETY: man was filled in by drv_new.
        let d = unsafe { domain(&mut man) }.unwrap();
        assert_eq!(d.name, "web1");
        assert_eq!(d.pid, 4242);
        assert_eq!(d.resources.len(), 1);
        // An unknown flag is refused, not ignored.
        // SAFETY: as above.
        let rc = unsafe {
            (drv.drv_add_resource)(&mut man, 0, c"/img".as_ptr(), 0, std::ptr::null_mut(), 8)
        };
        assert_eq!(rc, -1);
        // Inquire: no state.
        let mut state: *mut c_char = c"x".as_ptr().cast_mut();
        // SAFETY: as above; state is writable.
        assert_eq!(unsafe { (drv.drv_inquire)(&mut man, &mut state, 0) }, 0);
        assert!(state.is_null());
        // SAFETY: man was filled in by drv_new; freed once.
        unsafe { (drv.drv_free)(&mut man) };
        assert!(man.private_data.is_null());
        // SAFETY: as libvirt at unload.
        assert_eq!(unsafe { (drv.drv_deinit)() }, 0);
    }
}
