//! The admin API's audit log: one JSON line per admin action, appended to a
//! file only the switch's user can read, each synced to disk before the
//! action is taken (an action that cannot be written down is refused).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Who did what, when, from where; `outcome` is the HTTP status, absent on
/// the line written before the action.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub at: String,
    pub request_id: &'a str,
    /// The operator's name; `None` for a refused credential.
    pub operator: Option<&'a str>,
    pub peer: String,
    pub action: &'a str,
    /// The method and path, with its query string (never a credential).
    pub target: &'a str,
    pub outcome: Option<u16>,
}

#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = manifold_edge::private_files::open_private_append(path)?;
        Ok(AuditLog {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` and syncs it, off the runtime's threads.
    pub async fn record(&self, entry: &AuditEntry<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
