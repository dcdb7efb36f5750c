//! `scripts/setup` on a machine where nothing it installs is present: a throw-away virtualenv's
//! `python3` first on a `PATH` that holds only the tools the script needs to run, an empty
//! rustup home, no Chromium, Node.js or clang, and a checkout without `node_modules`. The script
//! must say what it would install, step by step, and exit 0; a step that fails must stop it with
//! a message naming the step and the command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use refold_tests::{Sandbox, repo_root, text};

/// The tools `scripts/setup` itself runs, linked into one folder so that `PATH` holds them and
/// nothing else (no chromium, node, npm, clang-19 or apt-get).
const TOOLS: [&str; 9] = [
    "bash", "cargo", "rustup", "grep", "sed", "dirname", "id", "env", "cat",
];

/// A bare machine: a copy of the script in a checkout of its own (no `node_modules`), a folder
/// of the tools it needs, and a fresh virtualenv (no SecantusDB, no componentize-py).
struct Bare {
    script: PathBuf,
    path: String,
    rustup_home: PathBuf,
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("bash")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("bash");
    assert!(out.status.success(), "{tool} is not on this machine's PATH");
    PathBuf::from(text(&out.stdout).trim())
}

fn bare(sandbox: &Sandbox) -> Bare {
    let checkout = sandbox.path("checkout");
    std::fs::create_dir_all(checkout.join("scripts")).expect("scripts folder");
    std::fs::create_dir_all(checkout.join("example-projections/js")).expect("js folder");
    let script = checkout.join("scripts/setup");
    std::fs::copy(repo_root().join("scripts/setup"), &script).expect("copy scripts/setup");

    let tools = sandbox.path("tools");
    std::fs::create_dir_all(&tools).expect("tools folder");
    for tool in TOOLS {
        std::os::unix::fs::symlink(which(tool), tools.join(tool)).expect("link a tool");
    }
    let venv = sandbox.path("venv");
    let out = Command::new(which("python3"))
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 -m venv");
    assert!(out.status.success(), "venv: {}", text(&out.stderr));
    let rustup_home = sandbox.path("rustup-home");
    std::fs::create_dir_all(&rustup_home).expect("rustup home");
    Bare {
        script,
        path: format!("{}:{}", venv.join("bin").display(), tools.display()),
        rustup_home,
    }
}

fn setup(bare: &Bare, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(&bare.script)
        .args(args)
        .current_dir(bare.script.parent().expect("scripts folder"))
        .env_clear()
        .env("PATH", &bare.path)
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/setup")
}

#[test]
fn on_a_bare_machine_setup_says_what_it_installs_and_exits_0() {
    let sandbox = Sandbox::new();
    let bare = bare(&sandbox);
    let rustup_home = bare.rustup_home.display().to_string();
    let out = setup(
        &bare,
        &["--dry-run"],
        &[
            ("REFOLD_SETUP_SKIP_APT", "1"),
            ("RUSTUP_HOME", &rustup_home),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "setup --dry-run exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "setup: would install the Rust target wasm32-unknown-unknown: rustup target add wasm32-unknown-unknown",
        "setup: would install the Rust target wasm32-wasip2: rustup target add wasm32-wasip2",
        "setup: would install SecantusDB 0.7.0b3 (pip): python3 -m pip install --quiet --disable-pip-version-check SecantusDB==0.7.0b3",
        "setup: would install componentize-py 0.25.1 (pip): python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1",
        "setup: skipping chromium and chromium-driver (apt) (REFOLD_SETUP_SKIP_APT=1): apt-get install chromium chromium-driver",
        "setup: skipping nodejs and npm (apt) (REFOLD_SETUP_SKIP_APT=1): apt-get install nodejs npm",
        "setup: skipping clang-19, lld-19, libclang-rt-19-dev-wasm32 and wasi-libc (apt) (REFOLD_SETUP_SKIP_APT=1): apt-get install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc",
        "setup: dry run done",
    ] {
        assert!(
            lines.contains(&expected),
            "no line {expected:?} in:\n{stdout}"
        );
    }
    // componentize-qjs comes from the checkout's lock file, never rewritten.
    let checkout_js = bare
        .script
        .parent()
        .and_then(Path::parent)
        .map(|c| c.join("example-projections/js"));
    let npm = format!(
        "setup: would install componentize-qjs (npm ci in example-projections/js): npm ci --prefix {} --no-audit --no-fund --loglevel=error",
        checkout_js.expect("checkout").display()
    );
    assert!(
        lines.contains(&npm.as_str()),
        "no line {npm:?} in:\n{stdout}"
    );
}

#[test]
fn a_failing_step_stops_setup_naming_the_step_and_the_command() {
    let sandbox = Sandbox::new();
    let bare = bare(&sandbox);
    // Nothing listens on port 9 of the loopback: pip fails at once. Rust is the machine's own
    // (its targets installed by the suite's set-up), wherever rustup keeps it.
    let homes: Vec<(&str, String)> = ["RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name, value)))
        .collect();
    let mut env: Vec<(&str, &str)> = homes.iter().map(|(n, v)| (*n, v.as_str())).collect();
    env.extend([
        ("REFOLD_SETUP_SKIP_APT", "1"),
        ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
        ("PIP_RETRIES", "0"),
        ("PIP_TIMEOUT", "2"),
        ("PIP_NO_CACHE_DIR", "1"),
    ]);
    let out = setup(&bare, &[], &env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let expected = "setup: step 'SecantusDB 0.7.0b3 (pip)' failed: python3 -m pip install --quiet --disable-pip-version-check SecantusDB==0.7.0b3 (see the output above)";
    assert!(
        stderr.lines().any(|l| l == expected),
        "no line {expected:?} in:\n{stderr}"
    );
    assert!(
        text(&out.stdout).contains("setup: installing SecantusDB 0.7.0b3 (pip)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn setup_refuses_an_unknown_option_and_explains_itself() {
    let sandbox = Sandbox::new();
    let bare = bare(&sandbox);
    let out = setup(&bare, &["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("setup: unknown option '--bogus' (try --help)"),
        "{}",
        text(&out.stderr)
    );
    let out = setup(&bare, &["--help"], &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("--dry-run"),
        "{}",
        text(&out.stdout)
    );
}
