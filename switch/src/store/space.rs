//! [`FreeSpace`]: the guard that keeps the store off a full disk.
//!
//! sled's first failed write is sticky (see [`crate::storage`]), so the
//! switch would rather not let it happen: before a call that may write, it
//! checks the free space of the data directory's filesystem and refuses the
//! call (503 `storage_full`) while it is below `[storage] min_free_mb`. The
//! reading is `statvfs`, kept for [`FreeSpace::MAX_AGE`] so that a busy switch
//! pays for one system call a few times a second, not one per request.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the guard found when it refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceShort {
    pub available_bytes: u64,
    pub min_free_bytes: u64,
}

/// The free space of one directory's filesystem, measured at most every
/// [`FreeSpace::MAX_AGE`].
#[derive(Debug)]
pub struct FreeSpace {
    path: PathBuf,
    min_free_bytes: u64,
    origin: Instant,
    /// When the cached reading was taken, in microseconds after `origin`
    /// plus one (0: never).
    measured_at_us: AtomicU64,
    /// Bytes available to unprivileged writers, as last measured.
    available: AtomicU64,
}

impl FreeSpace {
    /// How long a reading is trusted.
    pub const MAX_AGE: Duration = Duration::from_millis(200);

    /// A guard over the filesystem holding `path`, refusing below
    /// `min_free_bytes` (0: never refuses, and never measures).
    pub fn new(path: &Path, min_free_bytes: u64) -> Self {
        FreeSpace {
            path: path.to_owned(),
            min_free_bytes,
            origin: Instant::now(),
            measured_at_us: AtomicU64::new(0),
            available: AtomicU64::new(u64::MAX),
        }
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Bytes available on the filesystem now (`f_bavail * f_frsize`).
    pub fn measure(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.path)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Refuses when the free space is below the minimum, by a reading at
    /// most [`FreeSpace::MAX_AGE`] old. A filesystem that cannot be measured
    /// is not refused for it: the store's own errors still stop the call.
    pub fn check(&self) -> Result<(), SpaceShort> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let now_us = self.now_us();
        let measured_at = self.measured_at_us.load(Ordering::Acquire);
        let stale = measured_at == 0
            || now_us.saturating_sub(measured_at) >= Self::MAX_AGE.as_micros() as u64;
        // One caller refreshes a stale reading; the others use the old one
        // meanwhile (it is at most a few hundred milliseconds older).
        if stale
            && self
                .measured_at_us
                .compare_exchange(measured_at, now_us, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            match self.measure() {
                Ok(available) => self.available.store(available, Ordering::Release),
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), %error, "free space could not be measured");
                    self.available.store(u64::MAX, Ordering::Release);
                }
            }
        }
        self.judge(self.available.load(Ordering::Acquire))
    }

    fn judge(&self, available_bytes: u64) -> Result<(), SpaceShort> {
        if available_bytes < self.min_free_bytes {
            Err(SpaceShort {
                available_bytes,
                min_free_bytes: self.min_free_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_never_refuses_and_a_huge_minimum_always_does() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FreeSpace::new(dir.path(), 0).check(), Ok(()));
        let available = FreeSpace::new(dir.path(), 1).measure().unwrap();
        assert!(available > 0);
        let guard = FreeSpace::new(dir.path(), u64::MAX);
        let short = guard.check().unwrap_err();
        assert_eq!(short.min_free_bytes, u64::MAX);
        assert!(short.available_bytes < u64::MAX);
    }

    #[test]
    fn a_reading_is_reused_until_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let guard = FreeSpace::new(dir.path(), 1);
        assert_eq!(guard.check(), Ok(()));
        let first = guard.measured_at_us.load(Ordering::Acquire);
        assert_ne!(first, 0);
        // A pretend reading of nothing free is believed while it is fresh.
        guard.available.store(0, Ordering::Release);
        assert!(guard.check().is_err());
        assert_eq!(guard.measured_at_us.load(Ordering::Acquire), first);
        std::thread::sleep(FreeSpace::MAX_AGE + Duration::from_millis(20));
        assert_eq!(guard.check(), Ok(()));
    }

    #[test]
    fn a_missing_directory_is_not_refused_by_the_cached_check() {
        let guard = FreeSpace::new(Path::new("/nonexistent/manifold-space-test"), 1);
        assert_eq!(guard.check(), Ok(()));
        assert!(guard.measure().is_err());
    }
}
