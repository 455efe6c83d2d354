//! Work that can wait until the daemon is idle or a moment later: writing log lines, and
//! closing the fds of lease files already removed. The daemon's runtime thread queues it
//! while it serves requests. Fds are closed just before the thread sleeps (the runtime's
//! park hook), so a client's reply does not wait for them. Log lines are written by
//! [`log_writer`], [`LOG_DELAY`] after the first of them was queued, so that a stream of
//! requests shares one `write` for many lines instead of one per event. (The table task's
//! own after-reply work, holder records and log events, runs right after the connection
//! task has written the reply: `server::table_task`.)
//!
//! None of it changes what anyone else sees. A log line is only written later, never
//! dropped: the queue is written [`LOG_DELAY`] after its first line, at once when it grows
//! past [`MAX_LOG`] bytes, and when the daemon stops (a `kill -9` loses the lines of the
//! last [`LOG_DELAY`]). Each line carries the time of its event, not of its write. A lease
//! file's fd is only queued once the file is unlinked: its lock then guards an inode nobody
//! can reach by name any more (a new acquire creates a new file), so closing it a moment
//! later frees nothing anyone waits for.
//!
//! Only the thread that called [`enable`] defers; every other thread (and every other
//! command) does the work at once.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write as _;
use std::time::Duration;

use tokio::sync::Notify;

/// Log bytes queued before they are written regardless.
pub const MAX_LOG: usize = 32 * 1024;
/// Fds queued before they are closed regardless.
pub const MAX_FILES: usize = 64;
/// How long a log line may wait for the lines after it, to share their `write`.
pub const LOG_DELAY: Duration = Duration::from_millis(10);

/// Told when a line goes into an empty log queue: [`log_writer`] writes the queue soon.
static LOG_QUEUED: Notify = Notify::const_new();

#[derive(Default)]
struct Queue {
    log: Vec<u8>,
    files: Vec<File>,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Makes this thread defer (the daemon's runtime thread, before it serves anything).
pub fn enable() {
    ON.with(|on| on.set(true));
}

/// Queues a log line (newline included) to write when idle; false when this thread does not
/// defer (or is writing the queue right now): the caller writes it.
pub fn log(line: &[u8]) -> bool {
    if !ON.with(Cell::get) {
        return false;
    }
    let Ok((first, full)) = QUEUE.with(|q| {
        q.try_borrow_mut().map(|mut q| {
            let first = q.log.is_empty();
            q.log.extend_from_slice(line);
            (first, q.log.len() >= MAX_LOG)
        })
    }) else {
        return false;
    };
    if full {
        write_log();
    } else if first {
        LOG_QUEUED.notify_one();
    }
    true
}

/// Closes `file` when idle (on a thread that defers), else now. Only for an fd whose
/// closing may wait: see the module documentation.
pub fn close(file: File) {
    if !ON.with(Cell::get) {
        drop(file);
        return;
    }
    let full = QUEUE.with(|q| match q.try_borrow_mut() {
        Ok(mut q) => {
            q.files.push(file);
            q.files.len() >= MAX_FILES
        }
        // The queue is in use (never, in practice): `file` closes now, which is always safe.
        Err(_) => false,
    });
    if full {
        close_files();
    }
}

/// The runtime's park hook: closes the queued fds.
pub fn on_park() {
    close_files();
}

/// Does all the queued work: writes the log (one `write` for all its lines) and closes the
/// fds.
pub fn run() {
    write_log();
    close_files();
}

/// Writes the queued log lines [`LOG_DELAY`] after the first of them was queued; runs for
/// as long as the runtime of the deferring thread does (spawn it there).
pub async fn log_writer() {
    loop {
        LOG_QUEUED.notified().await;
        tokio::time::sleep(LOG_DELAY).await;
        write_log();
    }
}

fn write_log() {
    let log = QUEUE.with(|q| std::mem::take(&mut q.borrow_mut().log));
    if log.is_empty() {
        return;
    }
    // A log that cannot be written is not worth failing anything for.
    let _ = std::io::stderr().write_all(&log);
    // Keep the buffer (its capacity) for the next lines.
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        if q.log.is_empty() {
            let mut log = log;
            log.clear();
            q.log = log;
        }
    });
}

fn close_files() {
    let files = QUEUE.with(|q| std::mem::take(&mut q.borrow_mut().files));
    drop(files);
}

/// Does the queued work when dropped: the daemon holds one across its runtime, so lines
/// queued before it stops (or panics) are written.
#[derive(Debug)]
pub struct RunOnDrop;

impl Drop for RunOnDrop {
    fn drop(&mut self) {
        run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> (usize, usize) {
        QUEUE.with(|q| {
            let q = q.borrow();
            (q.log.len(), q.files.len())
        })
    }

    #[test]
    fn only_an_enabled_thread_defers() {
        std::thread::spawn(|| {
            assert!(!log(b"now\n"));
            close(tempfile::tempfile().unwrap());
            assert_eq!(queued(), (0, 0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn queued_work_is_done_when_idle_or_full() {
        std::thread::spawn(|| {
            enable();
            assert!(log(b"a line\n"));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let f = File::create(&path).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            close(f);
            assert_eq!(queued(), (7, 1));
            let link = format!("/proc/self/fd/{fd}");
            assert_eq!(std::fs::read_link(&link).unwrap(), path, "still open");
            run();
            assert_eq!(queued(), (0, 0));
            assert_ne!(std::fs::read_link(&link).ok(), Some(path.clone()), "closed");
            for _ in 0..MAX_FILES {
                close(File::open(&path).unwrap());
            }
            assert_eq!(queued().1, 0, "a full queue is closed at once");
            let long = vec![b'x'; MAX_LOG];
            assert!(log(&long));
            assert_eq!(queued().0, 0, "a full log is written at once");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_log_writer_writes_a_line_soon_and_once_for_many() {
        std::thread::spawn(|| {
            // Paused time: the clock moves only when every task waits, so the sleeps below
            // are exact however slow the machine.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            enable();
            rt.block_on(async {
                tokio::spawn(log_writer());
                tokio::task::yield_now().await;
                assert!(log(b"one\n"));
                assert!(log(b"two\n"));
                // Queued, not written: the lines wait for each other.
                tokio::time::sleep(LOG_DELAY / 4).await;
                assert_eq!(queued().0, 8);
                tokio::time::sleep(LOG_DELAY * 2).await;
                assert_eq!(queued().0, 0, "written within LOG_DELAY of the first line");
                // A later line starts a new batch.
                assert!(log(b"three\n"));
                assert_eq!(queued().0, 6);
                tokio::time::sleep(LOG_DELAY * 2).await;
                assert_eq!(queued().0, 0);
            });
        })
        .join()
        .unwrap();
    }
}
