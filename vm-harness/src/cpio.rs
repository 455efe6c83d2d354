//! A writer for the "newc" cpio format that the kernel unpacks as an initramfs.
//!
//! The rig appends one small archive of this kind (the freshly built `disklock` binary and
//! its libraries, plus any test files) to the cached base archive; the kernel unpacks
//! concatenated archives in order, later entries replacing earlier ones.

use std::collections::BTreeSet;

/// One archive being built in memory.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    data: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
    finished: bool,
}

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        assert!(!self.finished, "cpio archive already finished");
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime: fixed, so equal inputs give equal archives
            u32::try_from(body.len()).expect("cpio entry larger than 4 GiB"),
            0,
            0,
            0,
            0,
            u32::try_from(namesize).expect("cpio name too long"),
            0, // check
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(body);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// Add the directories leading to `path` (relative, no leading slash) that this
    /// archive has not added yet. Directories that already exist in an earlier archive
    /// are harmless: the kernel leaves them as they are.
    fn parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                let p = prefix.clone();
                self.entry(&p, S_IFDIR | 0o755, &[]);
            }
        }
    }

    fn clean(path: &str) -> &str {
        let p = path.trim_start_matches('/');
        assert!(
            !p.is_empty() && !p.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
            "bad archive path {path:?}"
        );
        p
    }

    /// Add a directory (and its parents).
    pub fn dir(&mut self, path: &str) {
        let p = Self::clean(path).to_owned();
        self.parents(&p);
        if self.dirs.insert(p.clone()) {
            self.entry(&p, S_IFDIR | 0o755, &[]);
        }
    }

    /// Add a regular file with permission bits `perm` (e.g. `0o755`).
    pub fn file(&mut self, path: &str, perm: u32, body: &[u8]) {
        let p = Self::clean(path).to_owned();
        self.parents(&p);
        self.entry(&p, S_IFREG | (perm & 0o7777), body);
    }

    /// Add a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let p = Self::clean(path).to_owned();
        self.parents(&p);
        self.entry(&p, S_IFLNK | 0o777, target.as_bytes());
    }

    /// Append the trailer and return the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.finished = true;
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse our own output back: (name, mode, body).
    fn parse(mut data: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&data[..6], b"070701", "magic at offset {offset}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&data[6 + i * 8..6 + (i + 1) * 8]).unwrap();
                usize::try_from(u32::from_str_radix(s, 16).unwrap()).unwrap()
            };
            let (mode, filesize, namesize) = (field(1), field(6), field(11));
            let name_end = 110 + namesize;
            let name = std::str::from_utf8(&data[110..name_end - 1])
                .unwrap()
                .to_owned();
            assert_eq!(data[name_end - 1], 0);
            let body_start = name_end.div_ceil(4) * 4;
            let body = data[body_start..body_start + filesize].to_vec();
            let next = (body_start + filesize).div_ceil(4) * 4;
            offset += next;
            data = &data[next..];
            if name == "TRAILER!!!" {
                assert!(data.is_empty());
                return out;
            }
            out.push((name, u32::try_from(mode).unwrap(), body));
        }
    }

    #[test]
    fn entries_round_trip_with_parents_once() {
        let mut a = Archive::new();
        a.file("/usr/local/bin/disklock", 0o755, b"\x7fELF...");
        a.file("usr/local/bin/other", 0o644, b"abcde");
        a.symlink("usr/local/bin/dl", "disklock");
        a.dir("usr/local/share/x");
        let data = a.finish();
        assert!(data.len().is_multiple_of(4));
        let entries = parse(&data);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/disklock",
                "usr/local/bin/other",
                "usr/local/bin/dl",
                "usr/local/share",
                "usr/local/share/x"
            ]
        );
        assert_eq!(entries[3].1, 0o100_755);
        assert_eq!(entries[3].2, b"\x7fELF...");
        assert_eq!(entries[4].2, b"abcde");
        assert_eq!(entries[5].1, 0o120_777);
        assert_eq!(entries[5].2, b"disklock");
        assert_eq!(entries[0].1, 0o040_755);
    }

    #[test]
    #[should_panic(expected = "bad archive path")]
    fn rejects_dot_dot() {
        Archive::new().file("usr/../etc/passwd", 0o644, b"");
    }
}
