//! Building projection sources into components.
//!
//! Rust projections build for `wasm32-unknown-unknown` (no WASI at all) and are turned into
//! components in-process with `wit-component`, so no extra tool is needed beyond cargo and the
//! wasm target, which is installed on first use. Python projections (a folder with `app.py` and
//! `wit/`) build with componentize-py, JavaScript ones (`app.js` and `wit/`) with
//! componentize-qjs; both tools come from their language's registry (pip, npm). C projections
//! (`app.c`) build with clang and wasi-libc; their bindings are generated here from the contract
//! (wit-bindgen's C generator, in-process) and the component is made in-process too, with the
//! WASI preview1 adapter when the code uses libc's I/O.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The contract compiled into this binary: used for a C projection without a `wit/` folder.
pub const CONTRACT: &str = include_str!("../../wit/projection.wit");

/// The target Rust projections build for.
pub const RUST_TARGET: &str = "wasm32-unknown-unknown";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The folder is not a projection this command can build.
    #[error(
        "{0} has no Cargo.toml (Rust), app.py (Python), app.js (JavaScript) or app.c (C): point at a projection folder, e.g. one made by `refold new`"
    )]
    NotAProjection(PathBuf),
    /// A Python or JavaScript projection without its copy of the contract.
    #[error("{0} has no wit/ folder with the Refold contract (`refold new` writes one)")]
    NoWit(PathBuf),
    /// A language's build tool failed; its output was shown.
    #[error("{tool} failed for {path} (see its output above)")]
    Failed {
        /// The tool.
        tool: String,
        /// The projection folder.
        path: PathBuf,
    },
    /// A tool could not be run.
    #[error("cannot run `{tool}`: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// Why.
        message: String,
    },
    /// cargo failed; its output was shown.
    #[error("cargo build failed for {0} (see the compiler output above)")]
    Cargo(PathBuf),
    /// The output could not be turned into a component.
    #[error("{path}: cannot make a component: {message}")]
    Componentize {
        /// The core module.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cargo that runs us, if any, else the one on the PATH.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Install the wasm target with rustup when the toolchain lacks it (idempotent).
pub fn ensure_rust_target() -> Result<(), BuildError> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| BuildError::Tool {
            tool: "rustc".into(),
            message: e.to_string(),
        })?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(RUST_TARGET).is_dir() {
        return Ok(());
    }
    eprintln!("installing the Rust target {RUST_TARGET} (once)...");
    let status = Command::new("rustup")
        .args(["target", "add", RUST_TARGET])
        .status()
        .map_err(|e| BuildError::Tool {
            tool: "rustup".into(),
            message: e.to_string(),
        })?;
    if !status.success() {
        return Err(BuildError::Tool {
            tool: "rustup".into(),
            message: format!("`rustup target add {RUST_TARGET}` failed"),
        });
    }
    Ok(())
}

/// Where guest builds put their intermediate files: beside the host's target folder when
/// cargo told us one (so CI caches them), else in the project's own `target`.
fn target_dir(project: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => project.join("target"),
    }
}

/// Build every `cdylib` of the Rust crate or workspace at `project` and write one component per
/// crate into `out_dir` (`<crate_name>.wasm`). Returns the component paths.
pub fn build_rust(project: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let manifest = project.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotAProjection(project.to_path_buf()));
    }
    ensure_rust_target()?;
    let output = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            RUST_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir(project))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| BuildError::Tool {
            tool: cargo(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(BuildError::Cargo(project.to_path_buf()));
    }
    let modules: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .flat_map(|msg| {
            msg["filenames"]
                .as_array()
                .map(|files| {
                    files
                        .iter()
                        .filter_map(|f| f.as_str().map(PathBuf::from))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
        .collect();
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    modules
        .iter()
        .map(|module| componentize(module, out_dir))
        .collect()
}

/// Build the projection at `project`, whatever its language: Rust (`Cargo.toml`), Python
/// (`app.py`) or JavaScript (`app.js`). Returns the component paths.
pub fn build(project: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    if project.join("Cargo.toml").is_file() {
        return build_rust(project, out_dir);
    }
    if project.join("app.c").is_file() {
        return build_c(project, out_dir).map(|component| vec![component]);
    }
    let script = if project.join("app.py").is_file() {
        Script::Python
    } else if project.join("app.js").is_file() {
        Script::JavaScript
    } else {
        return Err(BuildError::NotAProjection(project.to_path_buf()));
    };
    build_script(project, out_dir, script).map(|component| vec![component])
}

/// A projection in an interpreted language, compiled with its interpreter into a component.
#[derive(Debug, Clone, Copy)]
enum Script {
    Python,
    JavaScript,
}

/// Build a Python or JavaScript projection into `out_dir/NAME.wasm`, NAME being the folder's
/// name with `-` as `_`.
fn build_script(project: &Path, out_dir: &Path, script: Script) -> Result<PathBuf, BuildError> {
    let project = std::fs::canonicalize(project).map_err(io(project))?;
    let wit = project.join("wit");
    if !wit.is_dir() {
        return Err(BuildError::NoWit(project));
    }
    let name = project
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "projection".into());
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    // The tool runs in the project folder: the output path must not be relative.
    let out_dir = std::fs::canonicalize(out_dir).map_err(io(out_dir))?;
    let target = out_dir.join(format!("{name}.wasm"));
    let partial = target.with_extension("wasm.partial");
    let (tool, mut command) = match script {
        Script::Python => {
            let mut command = Command::new("componentize-py");
            command
                .arg("-d")
                .arg(&wit)
                .args(["-w", "projection", "componentize", "-p"])
                .arg(&project)
                .arg("app")
                .arg("-o")
                .arg(&partial);
            (
                "componentize-py (pip install componentize-py==0.25.1)",
                command,
            )
        }
        Script::JavaScript => {
            // The project's own pinned copy (`npm install`), else one on the PATH.
            let local = project.join("node_modules/.bin/componentize-qjs");
            let mut command = Command::new(if local.is_file() {
                local.into_os_string()
            } else {
                "componentize-qjs".into()
            });
            command
                .arg("--wit")
                .arg(&wit)
                .arg("--js")
                .arg(project.join("app.js"))
                .arg("--module-root")
                .arg(&project)
                .args(["-n", "projection", "--sync", "-o"])
                .arg(&partial);
            (
                "componentize-qjs (npm install in the projection folder)",
                command,
            )
        }
    };
    let status = command
        .current_dir(&project)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| BuildError::Tool {
            tool: tool.into(),
            message: e.to_string(),
        })?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(BuildError::Failed {
            tool: tool.into(),
            path: project,
        });
    }
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(target)
}

/// Write the C bindings of the contract (`projection.h`, `projection.c` and
/// `projection_component_type.o`) into `dir`.
pub fn c_bindings(contract: &str, dir: &Path) -> Result<(), BuildError> {
    let generate = || -> anyhow::Result<wit_bindgen_core::Files> {
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve.push_str("projection.wit", contract)?;
        let world = resolve.select_world(&[package], Some("projection"))?;
        let mut files = wit_bindgen_core::Files::default();
        wit_bindgen_c::Opts::default()
            .build()
            .generate(&mut resolve, world, &mut files)?;
        Ok(files)
    };
    let files = generate().map_err(|e| BuildError::Tool {
        tool: "the C bindings generator".into(),
        message: format!("{e:#}"),
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, bytes) in files.iter() {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(())
}

/// The clang that targets wasm: `$REFOLD_CLANG`, else `clang-19`, else `clang`.
fn clang() -> String {
    if let Ok(clang) = std::env::var("REFOLD_CLANG") {
        return clang;
    }
    let found = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if found("clang-19") {
        "clang-19"
    } else {
        "clang"
    }
    .to_owned()
}

/// The wasi-libc sysroot: `$WASI_SYSROOT`, else Debian's (`/usr`, package `wasi-libc`), else
/// wasi-sdk's.
fn wasi_sysroot() -> PathBuf {
    if let Some(root) = std::env::var_os("WASI_SYSROOT") {
        return PathBuf::from(root);
    }
    if Path::new("/usr/include/wasm32-wasi").is_dir() {
        return PathBuf::from("/usr");
    }
    PathBuf::from("/opt/wasi-sdk/share/wasi-sysroot")
}

/// Build a C projection: every `*.c` of the folder with the contract's bindings, into
/// `out_dir/NAME.wasm`, NAME being the folder's name with `-` as `_`.
fn build_c(project: &Path, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let project = std::fs::canonicalize(project).map_err(io(project))?;
    let name = project
        .file_name()
        .map(|n| n.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "projection".into());
    let contract = match std::fs::read_to_string(project.join("wit/projection.wit")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CONTRACT.to_owned(),
        Err(e) => return Err(io(&project.join("wit/projection.wit"))(e)),
    };
    let work = target_dir(&project).join("c").join(&name);
    let bindings = work.join("bindings");
    c_bindings(&contract, &bindings)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&project)
        .map_err(io(&project))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let module = work.join(format!("{name}.wasm"));
    let clang = clang();
    let status = Command::new(&clang)
        .arg("--target=wasm32-wasi")
        .arg(format!("--sysroot={}", wasi_sysroot().display()))
        .args(["-O2", "-std=c11", "-Wall", "-mexec-model=reactor"])
        .arg("-I")
        .arg(&project)
        .arg("-I")
        .arg(&bindings)
        .args(["-Wl,--strip-all", "-Wl,--gc-sections", "-o"])
        .arg(&module)
        .args(&sources)
        .arg(bindings.join("projection.c"))
        .arg(bindings.join("projection_component_type.o"))
        .status()
        .map_err(|e| BuildError::Tool {
            tool: format!(
                "{clang} (apt install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)"
            ),
            message: e.to_string(),
        })?;
    if !status.success() {
        return Err(BuildError::Failed {
            tool: clang,
            path: project,
        });
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    componentize(&module, out_dir)
}

/// Turn a core module carrying wit-bindgen's component type into a component in `out_dir`,
/// written atomically (a watcher never sees half a file).
pub fn componentize(module: &Path, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let bytes = std::fs::read(module).map_err(io(module))?;
    // A module that uses libc's I/O imports WASI preview1: the adapter maps it onto WASI 0.2.
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| {
            encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| BuildError::Componentize {
            path: module.to_path_buf(),
            message: format!("{e:#}"),
        })?;
    let name = module
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("projection.wasm"));
    let target = out_dir.join(name);
    let partial = target.with_extension("wasm.partial");
    std::fs::write(&partial, component).map_err(io(&partial))?;
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(target)
}
