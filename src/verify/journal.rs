//! The replay journal: the nonces of admitted packets, on disk before their bytes are served.
//!
//! The in-memory replay cache dies with the process, so without this file a packet admitted
//! before a crash could be admitted again after the restart, within its lifetime, and its bytes
//! served twice. Every nonce is appended here and the file is synced (`fdatasync`) before the
//! packet's entropy reaches the pool; at start the live records are loaded back into the cache.
//!
//! Format: the 8-byte magic `KIRQRPL1`, then 24-byte records `nonce (16) ‖ expires_at_ms (u64,
//! big-endian)`. A torn last record (a crash mid-append) is ignored: its packet was never
//! admitted, because admission waits for the sync. At start, and whenever dead records outnumber
//! the live ones, the file is rewritten with the live records only (temporary file, fsync,
//! rename, fsync of the directory), so it stays near `live × 24` bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"KIRQRPL1";
/// One record: a nonce and its packet's expiry (Unix ms).
pub type Record = ([u8; 16], u64);
const RECORD: usize = 24;
/// Largest journal read at start: 2^22 records, far above any live set the cache allows.
const MAX_FILE: u64 = MAGIC.len() as u64 + ((RECORD as u64) << 22);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("replay state file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "replay state file {path} is not a Kirq replay journal (bad magic); refusing to start \
         without it: move it away only if no packet admitted by the last run can still be valid \
         (wait 60 s plus trust.max_clock_skew_ms)"
    )]
    BadMagic { path: PathBuf },
    #[error("replay state file {path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Shared with [`Journal::sync_handle`]: a sync may run without the lock that appends take.
    file: Arc<File>,
    /// Records in the file now.
    records: usize,
    /// Records appended since the journal was opened (never decreases): a sync ticket.
    appended: u64,
    /// A compaction replaced the file but could not reopen it: appends would go to the old,
    /// unlinked file, so every append fails until a restart.
    stale: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the magic and `live` to `path` atomically (temporary file, fsync, rename, dir fsync).
fn rewrite(path: &Path, live: &mut dyn Iterator<Item = Record>) -> io::Result<usize> {
    let tmp = path.with_extension("tmp");
    let mut buf = Vec::with_capacity(4096);
    buf.extend_from_slice(MAGIC);
    let mut n = 0;
    for (nonce, exp) in live {
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(&exp.to_be_bytes());
        n += 1;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?
        .sync_all()?;
    }
    Ok(n)
}

impl Journal {
    /// Opens (or creates) the journal and returns it with the records still live at `now_ms`
    /// (`expires_at_ms + skew_ms >= now_ms`), the file compacted to those.
    pub fn open(
        path: &Path,
        now_ms: u64,
        skew_ms: u64,
    ) -> Result<(Self, Vec<Record>), JournalError> {
        let mut live = Vec::new();
        match File::open(path) {
            Ok(f) => {
                let len = f.metadata().map_err(io_err(path))?.len();
                if len > MAX_FILE {
                    return Err(JournalError::TooLarge {
                        path: path.to_owned(),
                    });
                }
                let mut bytes = Vec::with_capacity(len as usize);
                f.take(MAX_FILE)
                    .read_to_end(&mut bytes)
                    .map_err(io_err(path))?;
                if !bytes.is_empty() {
                    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                        return Err(JournalError::BadMagic {
                            path: path.to_owned(),
                        });
                    }
                    // chunks_exact drops a torn last record.
                    for r in bytes[MAGIC.len()..].chunks_exact(RECORD) {
                        let nonce: [u8; 16] = r[..16].try_into().expect("16 bytes");
                        let exp = u64::from_be_bytes(r[16..].try_into().expect("8 bytes"));
                        if exp.saturating_add(skew_ms) >= now_ms {
                            live.push((nonce, exp));
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let records = rewrite(path, &mut live.iter().copied()).map_err(io_err(path))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok((
            Self {
                path: path.to_owned(),
                file: Arc::new(file),
                records,
                appended: 0,
                stale: false,
            },
            live,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (not yet synced).
    pub fn append(&mut self, nonce: &[u8; 16], expires_at_ms: u64) -> io::Result<()> {
        if self.stale {
            return Err(io::Error::other("replay journal could not be reopened"));
        }
        let mut r = [0u8; RECORD];
        r[..16].copy_from_slice(nonce);
        r[16..].copy_from_slice(&expires_at_ms.to_be_bytes());
        (&*self.file).write_all(&r)?;
        self.records += 1;
        self.appended += 1;
        Ok(())
    }

    /// Records appended since the journal was opened: once a sync that started at or after this
    /// count returns, every one of them is durable.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// What a sync without the journal's lock needs: the records appended so far and the file
    /// they were appended to. `file.sync_data()` then makes all of them durable: those appended
    /// to this file by the sync itself, those appended to an earlier file by the compaction that
    /// replaced it (a compaction writes every live record to the new file and syncs it). So the
    /// lock appends take need not be held through the `fdatasync`, and packets verified while one
    /// sync runs share the next one (group commit).
    pub fn sync_handle(&self) -> (u64, Arc<File>) {
        (self.appended, self.file.clone())
    }

    /// Makes every appended record durable (the tests' way; the verifier syncs through
    /// [`Self::sync_handle`]).
    #[cfg(test)]
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// True when dead records outnumber `live` enough that a rewrite pays.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.records > 4096 && self.records > 2 * live
    }

    /// Rewrites the file with `live` only (synced), then appends after them.
    pub fn compact(&mut self, live: &mut dyn Iterator<Item = Record>) -> io::Result<()> {
        let records = rewrite(&self.path, live)?;
        match std::fs::OpenOptions::new().append(true).open(&self.path) {
            Ok(f) => {
                self.file = Arc::new(f);
                self.records = records;
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay");
        let (mut j, live) = Journal::open(&p, 1_000, 0).unwrap();
        assert!(live.is_empty());
        j.append(&[1; 16], 5_000).unwrap();
        j.append(&[2; 16], 2_000).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, live) = Journal::open(&p, 3_000, 0).unwrap();
        assert_eq!(live, vec![([1; 16], 5_000)]);
        // Compacted at open: magic + one record.
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8 + 24);
        // The skew keeps a record alive a little past its expiry.
        let (_, live) = Journal::open(&p, 5_500, 1_000).unwrap();
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_a_foreign_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay");
        let (mut j, _) = Journal::open(&p, 0, 0).unwrap();
        j.append(&[7; 16], 100).unwrap();
        j.sync().unwrap();
        drop(j);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[9; 10]).unwrap();
        drop(f);
        let (_, live) = Journal::open(&p, 0, 0).unwrap();
        assert_eq!(live, vec![([7; 16], 100)]);
        std::fs::write(&p, b"not a journal at all").unwrap();
        assert!(matches!(
            Journal::open(&p, 0, 0),
            Err(JournalError::BadMagic { .. })
        ));
    }

    #[test]
    fn compaction_keeps_only_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("replay");
        let (mut j, _) = Journal::open(&p, 0, 0).unwrap();
        for i in 0..5000u32 {
            let mut n = [0u8; 16];
            n[..4].copy_from_slice(&i.to_be_bytes());
            j.append(&n, 10).unwrap();
        }
        assert!(j.wants_compaction(10));
        j.compact(&mut std::iter::once(([5; 16], 99))).unwrap();
        j.append(&[6; 16], 99).unwrap();
        j.sync().unwrap();
        drop(j);
        let (_, live) = Journal::open(&p, 0, 0).unwrap();
        assert_eq!(live, vec![([5; 16], 99), ([6; 16], 99)]);
    }
}
