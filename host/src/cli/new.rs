//! `refold new`: scaffold a projection that builds with one command.
//!
//! A scaffold is self-contained: the language's SDK layer and the WIT contract are copied into
//! it from this binary, so it needs neither this repository nor a registry entry for the SDK.
//! Each handles one event type, and keeps its logic in a pure function with a test of its own
//! that runs natively (`cargo test`, `python3 -m unittest`, `node --test`).
//!
//! The files a scaffold writes are real files under `host/templates/new/<language>/`, as Spin
//! keeps its templates, compiled in with `include_str!`. A template's path is the path it is
//! written to plus `.tmpl`: the suffix keeps cargo, git, `node --test` and `unittest` discovery
//! from treating a template as a file of this repository. A template names its placeholders
//! `{{name}}`, `{{event_type}}`, `{{crate_name}}` (the Rust component's file name) and
//! `{{folder}}` (a script component's file name, after its folder); `render` fills them in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::domain::manifest::check_projection_name;

/// Languages `refold new` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// Rust, built for wasm32-unknown-unknown (no WASI).
    Rust,
    /// Python, built with componentize-py (pip).
    Python,
    /// JavaScript, built with componentize-qjs (npm).
    Js,
    /// C, built with clang and wasi-libc (apt).
    C,
}

/// Arguments of `refold new` (documented on the subcommand).
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The language of the projection.
    language: Language,
    /// The projection's name: lower-case ASCII letters, digits, `_` and `-`, starting with a
    /// letter, at most 48 characters.
    name: String,
    /// The folder to create (it must not exist, or be empty); `./NAME` by default.
    dir: Option<PathBuf>,
    /// The event type the scaffold handles.
    #[arg(long, default_value = "ItemAdded")]
    event_type: String,
}

/// The SDK and the contract, as compiled into this binary.
const SDK_FILES: [(&str, &str); 8] = [
    (
        "lib.rs",
        include_str!("../../../projections-sdk/src/lib.rs"),
    ),
    (
        "collection.rs",
        include_str!("../../../projections-sdk/src/collection.rs"),
    ),
    (
        "error.rs",
        include_str!("../../../projections-sdk/src/error.rs"),
    ),
    (
        "event.rs",
        include_str!("../../../projections-sdk/src/event.rs"),
    ),
    (
        "log.rs",
        include_str!("../../../projections-sdk/src/log.rs"),
    ),
    (
        "manifest.rs",
        include_str!("../../../projections-sdk/src/manifest.rs"),
    ),
    (
        "time.rs",
        include_str!("../../../projections-sdk/src/time.rs"),
    ),
    (
        "update.rs",
        include_str!("../../../projections-sdk/src/update.rs"),
    ),
];
const WIT: &str = crate::guest_build::CONTRACT;
const PYTHON_SDK: &str = include_str!("../../../example-projections/python/sdk/refold.py");
const JS_SDK: &str = include_str!("../../../example-projections/js/sdk/refold.js");
const JS_JSON: &str = include_str!("../../../example-projections/js/sdk/json.mjs");
const C_SDK: &str = include_str!("../../../example-projections/c/sdk/refold.h");

/// A template: the path it is written to in a scaffold, and its text.
type Template = (&'static str, &'static str);

/// The [`Template`] for the file `$file` of `$language`'s scaffold.
macro_rules! template {
    ($language:literal, $file:literal) => {
        (
            $file,
            include_str!(concat!(
                "../../templates/new/",
                $language,
                "/",
                $file,
                ".tmpl"
            )),
        )
    };
}

const RUST_TEMPLATES: [Template; 5] = [
    template!("rust", "Cargo.toml"),
    template!("rust", "src/lib.rs"),
    template!("rust", "README.md"),
    template!("rust", ".gitignore"),
    template!("rust", "sdk/Cargo.toml"),
];
const PYTHON_TEMPLATES: [Template; 5] = [
    template!("python", "app.py"),
    template!("python", "logic.py"),
    template!("python", "test_logic.py"),
    template!("python", ".gitignore"),
    template!("python", "README.md"),
];
const JS_TEMPLATES: [Template; 6] = [
    template!("js", "app.js"),
    template!("js", "logic.js"),
    template!("js", "logic.test.js"),
    template!("js", "package.json"),
    template!("js", ".gitignore"),
    template!("js", "README.md"),
];
const C_TEMPLATES: [Template; 6] = [
    template!("c", "app.c"),
    template!("c", "logic.h"),
    template!("c", "logic_test.c"),
    template!("c", "Makefile"),
    template!("c", ".gitignore"),
    template!("c", "README.md"),
];

/// The scaffold's fixture for `refold test`, the same in every language.
const FIXTURE: Template = (
    "fixtures/totals.json",
    include_str!("../../templates/new/fixtures/totals.json.tmpl"),
);

/// A template names a placeholder `refold new` does not define: a bug in the template, which
/// the unit tests find by rendering every language.
#[derive(Debug, thiserror::Error)]
#[error("template {file}: unknown placeholder `{{{{{placeholder}}}}}`")]
pub struct UnknownPlaceholder {
    /// The file the template renders.
    file: &'static str,
    /// The placeholder's name.
    placeholder: String,
}

/// What a scaffold's placeholders stand for.
struct Values<'a> {
    name: &'a str,
    event_type: &'a str,
    crate_name: String,
    folder: String,
}

impl Values<'_> {
    fn get(&self, placeholder: &str) -> Option<&str> {
        match placeholder {
            "name" => Some(self.name),
            "event_type" => Some(self.event_type),
            "crate_name" => Some(&self.crate_name),
            "folder" => Some(&self.folder),
            _ => None,
        }
    }
}

/// Fill in a template's `{{placeholder}}`s in one pass, so a value is never read as a
/// placeholder. `{{` not followed by a lower-case name and `}}` is kept as written.
fn render(
    file: &'static str,
    template: &str,
    values: &Values,
) -> Result<String, UnknownPlaceholder> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let placeholder = after.find("}}").map(|end| &after[..end]).filter(|key| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
        match placeholder {
            Some(key) => {
                let value = values.get(key).ok_or_else(|| UnknownPlaceholder {
                    file,
                    placeholder: key.to_owned(),
                })?;
                out.push_str(value);
                rest = &after[key.len() + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The files of a scaffold, as `(path in the scaffold, content)`.
fn scaffold(
    language: Language,
    values: &Values,
) -> Result<Vec<(String, String)>, UnknownPlaceholder> {
    let templates: &[Template] = match language {
        Language::Rust => &RUST_TEMPLATES,
        Language::Python => &PYTHON_TEMPLATES,
        Language::Js => &JS_TEMPLATES,
        Language::C => &C_TEMPLATES,
    };
    // The SDK layer is copied as it is: it has no placeholders.
    let copies: Vec<(String, &str)> = match language {
        Language::Rust => SDK_FILES
            .iter()
            .map(|(file, text)| (format!("sdk/src/{file}"), *text))
            .collect(),
        Language::Python => vec![("refold.py".to_owned(), PYTHON_SDK)],
        Language::Js => vec![
            ("refold.js".to_owned(), JS_SDK),
            ("json.mjs".to_owned(), JS_JSON),
        ],
        Language::C => vec![("refold.h".to_owned(), C_SDK)],
    };
    let mut files = templates
        .iter()
        .chain(std::iter::once(&FIXTURE))
        .map(|(file, template)| Ok(((*file).to_owned(), render(file, template, values)?)))
        .collect::<Result<Vec<_>, UnknownPlaceholder>>()?;
    files.extend(
        copies
            .into_iter()
            .map(|(file, text)| (file, text.to_owned())),
    );
    files.push(("wit/projection.wit".to_owned(), WIT.to_owned()));
    Ok(files)
}

pub(super) fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_projection_name(&args.name)?;
    anyhow::ensure!(
        (1..=128).contains(&args.event_type.len())
            && args
                .event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)),
        "--event-type `{}`: give 1 to 128 ASCII letters, digits, `_`, `.`, `:` or `-`",
        args.event_type
    );
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let occupied = std::fs::read_dir(&dir).map(|mut d| d.next().is_some());
    anyhow::ensure!(
        !matches!(occupied, Ok(true)),
        "{} exists and is not empty: refold new writes into a new folder only",
        dir.display()
    );
    // A Rust component is named after its crate; `refold build` names a script component after
    // its folder.
    let values = Values {
        name: &args.name,
        event_type: &args.event_type,
        crate_name: args.name.replace('-', "_"),
        folder: dir
            .file_name()
            .map(|n| n.to_string_lossy().replace('-', "_"))
            .unwrap_or_else(|| args.name.replace('-', "_")),
    };
    for (file, text) in scaffold(args.language, &values)? {
        write(&dir.join(file), &text)?;
    }
    let language = match args.language {
        Language::Rust => "Rust",
        Language::Python => "Python",
        Language::Js => "JavaScript",
        Language::C => "C",
    };
    println!(
        "created the {language} projection `{}` in {}\nbuild it:  refold build {} --out {}",
        args.name,
        dir.display(),
        dir.display(),
        dir.join("dist").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{Language, Values, render, scaffold};

    fn values() -> Values<'static> {
        Values {
            name: "my-proj",
            event_type: "ItemAdded",
            crate_name: "my_proj".into(),
            folder: "the_folder".into(),
        }
    }

    /// The scaffold's file at `path`.
    fn file(language: Language, path: &str) -> String {
        let files = scaffold(language, &values()).expect("every template renders");
        let found = files.into_iter().find(|(file, _)| file == path);
        found.map(|(_, text)| text).unwrap_or_default()
    }

    #[test]
    fn every_language_renders_every_placeholder() {
        for language in [Language::Rust, Language::Python, Language::Js, Language::C] {
            let files = scaffold(language, &values()).expect("every template renders");
            for (path, text) in files {
                assert!(!text.contains("{{"), "{language:?} {path}: {{{{ left");
            }
        }
    }

    #[test]
    fn fills_in_the_arguments() {
        let rust = |path| file(Language::Rust, path);
        assert!(rust("Cargo.toml").contains("\nname = \"my-proj\"\n"));
        assert!(rust("Cargo.toml").contains("refold-projections-sdk = { path = \"sdk\" }"));
        assert!(rust("src/lib.rs").contains("Manifest::new(\"my-proj\", 1)"));
        assert!(rust("src/lib.rs").contains(".event_types(&[\"ItemAdded\"])"));
        assert!(rust("src/lib.rs").contains("format!(\"amount is not a number: {value}\")"));
        assert!(rust("README.md").contains("writes `dist/my_proj.wasm`"));
        assert_eq!(rust(".gitignore"), "target/\ndist/\n");
        assert!(rust("sdk/src/lib.rs").starts_with("//!"));
        assert!(file(Language::Python, "app.py").contains(
            "manifest(\"my-proj\", 1, event_types=[\"ItemAdded\"], collections={\"totals\": []})"
        ));
        assert!(file(Language::Js, "package.json").contains("\"componentize-qjs\": \"0.4.5\""));
        assert!(file(Language::Js, "README.md").contains("writes `dist/the_folder.wasm`"));
        assert!(file(Language::C, "app.c").contains("rf_manifest_init(m, \"my-proj\", 1);"));
        assert!(file(Language::C, "Makefile").contains("\ntest:\n\tcc -std=c11"));
        assert!(file(Language::C, "wit/projection.wit").contains("package "));
    }

    #[test]
    fn renders_in_one_pass() {
        let values = Values {
            folder: "{{name}}".into(),
            ..values()
        };
        let text = render("t", "{{folder}} {{ x }} {{event_type}}}", &values);
        assert_eq!(text.ok().as_deref(), Some("{{name}} {{ x }} ItemAdded}"));
        let unknown = render("t", "a {{nme}} b", &values).err();
        assert_eq!(
            unknown.map(|e| e.to_string()).as_deref(),
            Some("template t: unknown placeholder `{{nme}}`")
        );
    }
}
