//! Deploying projections from a folder of `.wasm` components.
//!
//! Every `*.wasm` file directly in the folder is a projection. A file that fails to load is
//! reported by name and never started; the others run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{Engine, LoadError, PreparedProjection};

/// Why a folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The folder does not exist or is not a folder.
    #[error("projections folder {0} does not exist or is not a folder")]
    NoFolder(PathBuf),
    /// Listing or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A component file and what loading it gave.
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// The projection, or why it was refused.
    pub result: Result<PreparedProjection, LoadError>,
}

/// The `.wasm` files of a folder, sorted by name.
pub fn components_in(dir: &Path) -> Result<Vec<PathBuf>, DeployError> {
    if !dir.is_dir() {
        return Err(DeployError::NoFolder(dir.to_path_buf()));
    }
    let entries = std::fs::read_dir(dir).map_err(|source| DeployError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

/// Load every component of a folder.
pub fn load_folder(engine: &Arc<Engine>, dir: &Path) -> Result<Vec<Loaded>, DeployError> {
    components_in(dir)?
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| DeployError::Io {
                path: path.clone(),
                source,
            })?;
            let result = engine.load(&bytes);
            Ok(Loaded { path, result })
        })
        .collect()
}
