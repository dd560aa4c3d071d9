//! Verifying a store file without writing to it.
//!
//! redb verifies page checksums only while repairing, and its integrity check commits (and,
//! if the newest commit does not verify, rolls back to the previous one: right after a torn
//! commit, wrong for a file damaged later, which would silently drop acknowledged data). So
//! the check runs against a copy-on-write overlay of the file: redb reads the real file,
//! every write lands in memory and is thrown away. A file that fails is reported, untouched.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Builder, Database, DatabaseError, StorageBackend};

use crate::redb_store::map_db_error;
use crate::StoreError;

const PAGE: u64 = 4096;

#[derive(Debug)]
struct Overlay {
    file: File,
    /// Bytes of the file still visible: a shrink hides the tail even if it grows again.
    file_visible: u64,
    len: u64,
    /// Written pages, by index. Worst case the pages redb writes during one integrity
    /// check: the allocator state and headers, a small fraction of the file.
    pages: HashMap<u64, Box<[u8]>>,
}

#[derive(Debug)]
struct OverlayBackend {
    inner: Mutex<Overlay>,
}

impl OverlayBackend {
    fn new(file: File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(OverlayBackend {
            inner: Mutex::new(Overlay {
                file,
                file_visible: len,
                len,
                pages: HashMap::new(),
            }),
        })
    }
}

impl Overlay {
    /// Fills `out` from the file at `offset`, with zeros past the visible part.
    fn read_base(&mut self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        out.fill(0);
        if offset >= self.file_visible {
            return Ok(());
        }
        let n = (self.file_visible - offset).min(out.len() as u64) as usize;
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(&mut out[..n])
    }

    fn page_mut(&mut self, idx: u64) -> std::io::Result<&mut Box<[u8]>> {
        if !self.pages.contains_key(&idx) {
            let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
            self.read_base(idx * PAGE, &mut buf)?;
            self.pages.insert(idx, buf);
        }
        self.pages
            .get_mut(&idx)
            .ok_or_else(|| std::io::Error::other("overlay page vanished"))
    }
}

fn lock(m: &Mutex<Overlay>) -> std::sync::MutexGuard<'_, Overlay> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StorageBackend for OverlayBackend {
    fn len(&self) -> std::io::Result<u64> {
        Ok(lock(&self.inner).len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let mut o = lock(&self.inner);
        let end = offset
            .checked_add(out.len() as u64)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        if end > o.len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let mut pos = offset;
        let mut done = 0usize;
        while done < out.len() {
            let idx = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(out.len() - done);
            match o.pages.get(&idx) {
                Some(p) => out[done..done + n].copy_from_slice(&p[in_page..in_page + n]),
                None => o.read_base(pos, &mut out[done..done + n])?,
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut o = lock(&self.inner);
        if len < o.len {
            o.file_visible = o.file_visible.min(len);
            o.pages.retain(|idx, _| idx * PAGE < len);
            let last = len / PAGE;
            let cut = (len % PAGE) as usize;
            if let Some(p) = o.pages.get_mut(&last) {
                p[cut..].fill(0);
            }
        }
        o.len = len;
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut o = lock(&self.inner);
        let mut pos = offset;
        let mut done = 0usize;
        while done < data.len() {
            let idx = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(data.len() - done);
            let p = o.page_mut(idx)?;
            p[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
            pos += n as u64;
        }
        let end = offset + data.len() as u64;
        if end > o.len {
            o.len = end;
        }
        Ok(())
    }
}

pub(crate) struct Probe {
    /// Recovery had to fall back to the previous commit.
    pub rolled_back: bool,
}

/// Verifies every page checksum of the committed trees of the store file, then runs
/// `inspect` on the result, all without modifying the file. Reads the whole file once.
///
/// `allow_rollback`: for a file left by a crash, falling back to the previous commit when
/// the newest one is torn is what recovery is for; for a cleanly closed file it would mean
/// damage, and is refused.
pub(crate) fn verify_file(
    path: &Path,
    allow_rollback: bool,
    inspect: &dyn Fn(&Database) -> Result<(), StoreError>,
) -> Result<Probe, StoreError> {
    let file =
        File::open(path).map_err(|e| StoreError::io("opening the store to verify it", &e))?;
    let backend =
        OverlayBackend::new(file).map_err(|e| StoreError::io("reading the store size", &e))?;
    let rolled_back = Arc::new(AtomicBool::new(false));
    let mut builder = Builder::new();
    builder.set_check_integrity_on_open(true);
    builder.set_cache_size(32 * 1024 * 1024);
    // The engine reports progress in [0.3, 0.6) only when the newest commit fails
    // verification and it is about to fall back to the previous one.
    let flag = rolled_back.clone();
    builder.set_repair_callback(move |s| {
        if (0.3..0.6).contains(&s.progress()) {
            flag.store(true, Ordering::Relaxed);
            if !allow_rollback {
                s.abort();
            }
        }
    });
    let opened = catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(backend)));
    match opened {
        Ok(Ok(db)) => {
            inspect(&db)?;
            drop(db);
            Ok(Probe {
                rolled_back: rolled_back.load(Ordering::Relaxed),
            })
        }
        Ok(Err(DatabaseError::RepairAborted)) => Err(StoreError::Corrupt {
            what: "the newest commit fails its page checksums".to_string(),
        }),
        Ok(Err(e)) => Err(map_db_error(e, "verifying the store")),
        Err(_) => Err(StoreError::Corrupt {
            what: "the storage engine could not parse the file while verifying it".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_reads_file_writes_memory_and_honours_set_len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let o = OverlayBackend::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(o.len().unwrap(), 10_000);

        // A write across a page boundary is read back; the file is untouched.
        o.write(4090, &[0xee; 20]).unwrap();
        let mut buf = vec![0u8; 30];
        o.read(4085, &mut buf).unwrap();
        assert_eq!(&buf[..5], &original[4085..4090]);
        assert_eq!(&buf[5..25], &[0xee; 20]);
        assert_eq!(&buf[25..], &original[4110..4115]);
        assert_eq!(std::fs::read(&path).unwrap(), original);

        // Reads past the end fail; growing exposes zeros, and a shrink hides the old tail.
        assert!(o.read(9_999, &mut [0u8; 2]).is_err());
        o.set_len(5_000).unwrap();
        o.set_len(12_000).unwrap();
        let mut tail = vec![1u8; 100];
        o.read(5_000, &mut tail).unwrap();
        assert_eq!(tail, vec![0u8; 100]);
        o.read(4_990, &mut buf[..10]).unwrap();
        assert_eq!(&buf[..10], &original[4_990..5_000]);
        o.write(11_990, &[7; 20]).unwrap();
        assert_eq!(o.len().unwrap(), 12_010);
        assert_eq!(std::fs::read(&path).unwrap(), original);
    }
}
