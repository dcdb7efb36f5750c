//! The code cache: components compiled once and kept on disk by content hash, so a restart, an
//! in-place swap back to earlier code, or a rollback does not compile again.
//!
//! Layout of the cache folder (created with mode 0700):
//! - `key`: 32 random bytes this host created (mode 0600);
//! - `<sha256>.wasm`: a component as deployed; its name is its hash, checked on every read;
//! - `<sha256>.cwasm`: wasmtime's compiled form, prefixed with an HMAC-SHA256 tag over the hash
//!   and the code under `key`.
//!
//! Compiled code is native code that wasmtime loads without checking it, so it is loaded only if
//! its tag verifies: only code this host compiled and wrote itself. A missing, foreign or
//! corrupt entry is ignored and the component is compiled again. Writes go to a temporary file
//! that is renamed into place, so a crash never leaves a half-written entry under a real name.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type Tag = Hmac<Sha256>;

const TAG_BYTES: usize = 32;
const KEY_BYTES: usize = 32;

/// An on-disk cache of components and their compiled code.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; KEY_BYTES],
}

pub use crate::domain::code_hash;

fn is_hash(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl CodeCache {
    /// Open (creating if needed) a cache folder and its key.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let key = load_or_create_key(&dir.join("key"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tag(&self, hash: &str, code: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(hash.as_bytes());
        mac.update(code);
        mac
    }

    /// The component with this hash, if cached and intact.
    pub fn source(&self, hash: &str) -> Option<Vec<u8>> {
        if !is_hash(hash) {
            return None;
        }
        let bytes = std::fs::read(self.dir.join(format!("{hash}.wasm"))).ok()?;
        (code_hash(&bytes) == hash).then_some(bytes)
    }

    /// Keep a component under its hash.
    pub fn store_source(&self, hash: &str, bytes: &[u8]) {
        if is_hash(hash) && !self.dir.join(format!("{hash}.wasm")).is_file() {
            self.write(&format!("{hash}.wasm"), &[bytes]);
        }
    }

    /// Compiled code for this hash, if this host wrote it and it is intact.
    pub fn compiled(&self, hash: &str) -> Option<Vec<u8>> {
        if !is_hash(hash) {
            return None;
        }
        let mut bytes = std::fs::read(self.dir.join(format!("{hash}.cwasm"))).ok()?;
        if bytes.len() < TAG_BYTES {
            return None;
        }
        let code = bytes.split_off(TAG_BYTES);
        self.tag(hash, &code).verify_slice(&bytes).ok()?;
        Some(code)
    }

    /// Keep compiled code under its component's hash, tagged.
    pub fn store_compiled(&self, hash: &str, code: &[u8]) {
        if is_hash(hash) {
            let tag = self.tag(hash, code).finalize().into_bytes();
            self.write(&format!("{hash}.cwasm"), &[&tag, code]);
        }
    }

    /// Write a file atomically; a failure only costs a compile later, so it is logged, not
    /// returned.
    fn write(&self, name: &str, parts: &[&[u8]]) {
        let target = self.dir.join(name);
        let temp = self
            .dir
            .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            for part in parts {
                file.write_all(part)?;
            }
            file.sync_all()
        });
        if let Err(error) = written.and_then(|()| std::fs::rename(&temp, &target)) {
            let _ = std::fs::remove_file(&temp);
            tracing::warn!(file = %target.display(), %error, "cannot write to the code cache");
        }
    }
}

fn load_or_create_key(path: &Path) -> std::io::Result<[u8; KEY_BYTES]> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; KEY_BYTES]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        return Err(std::io::Error::other(format!(
            "{} is not a code cache key ({} bytes); remove it to start a new cache",
            path.display(),
            bytes.len()
        )));
    }
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            load_or_create_key(path)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_code_loads_only_with_this_hosts_tag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CodeCache::open(dir.path()).expect("open cache");
        let hash = code_hash(b"component");
        cache.store_compiled(&hash, b"native code");
        assert_eq!(cache.compiled(&hash).as_deref(), Some(&b"native code"[..]));

        // A file planted by someone without the key is ignored.
        let mut forged = vec![0u8; TAG_BYTES];
        forged.extend_from_slice(b"evil code");
        std::fs::write(dir.path().join(format!("{hash}.cwasm")), forged).expect("write");
        assert_eq!(cache.compiled(&hash), None);

        // So is code tagged for another hash.
        let other = code_hash(b"other");
        cache.store_compiled(&other, b"native code");
        std::fs::copy(
            dir.path().join(format!("{other}.cwasm")),
            dir.path().join(format!("{hash}.cwasm")),
        )
        .expect("write");
        assert_eq!(cache.compiled(&hash), None);

        // A second cache over the same folder shares the key.
        let again = CodeCache::open(dir.path()).expect("open cache");
        assert_eq!(again.compiled(&other).as_deref(), Some(&b"native code"[..]));
    }

    #[test]
    fn sources_are_checked_against_their_hash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = CodeCache::open(dir.path()).expect("open cache");
        let hash = code_hash(b"component");
        cache.store_source(&hash, b"component");
        assert_eq!(cache.source(&hash).as_deref(), Some(&b"component"[..]));
        std::fs::write(dir.path().join(format!("{hash}.wasm")), b"tampered").expect("write");
        assert_eq!(cache.source(&hash), None);
        assert_eq!(cache.source("../../etc/passwd"), None);
    }
}
