//! Architecture checks that need no database (ARCHITECTURE.md, "MongoDB in one room"):
//! `src/store/` is the only code that knows the MongoDB driver; the pure crates `events` and
//! `projections` never do.

use std::path::{Path, PathBuf};

/// What an import or a path of the driver looks like in source text.
const DRIVER_PATTERNS: [&str; 4] = ["mongodb::", "bson::", "use bson", "use mongodb"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` of every line under `dir` (except under `allowed`) that names the driver.
fn driver_mentions(dir: &Path, allowed: Option<&Path>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        if allowed.is_some_and(|allowed| file.starts_with(allowed)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            if DRIVER_PATTERNS.iter().any(|p| line.contains(p)) {
                found.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn only_src_store_knows_the_mongodb_driver() {
    let root = root();
    let found = driver_mentions(&root.join("src"), Some(&root.join("src/store")));
    assert!(
        found.is_empty(),
        "the MongoDB driver is used outside src/store/ (move the code into a store module and \
         call it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_pure_crates_never_know_the_mongodb_driver() {
    let root = root();
    for crate_dir in ["events", "projections"] {
        let found = driver_mentions(&root.join(crate_dir).join("src"), None);
        assert!(
            found.is_empty(),
            "{crate_dir} must stay pure (no MongoDB):\n{}",
            found.join("\n")
        );
        let manifest = std::fs::read_to_string(root.join(crate_dir).join("Cargo.toml"))
            .expect("the crate's manifest");
        for dependency in ["mongodb", "bson"] {
            assert!(
                !manifest
                    .lines()
                    .any(|l| l.trim_start().starts_with(dependency)),
                "{crate_dir}/Cargo.toml must not depend on {dependency}"
            );
        }
    }
}

/// The check itself finds what it must: a driver import outside the store is reported.
#[test]
fn the_check_reports_a_driver_import() {
    let dir = std::env::temp_dir().join(format!("architecture-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("store")).unwrap();
    std::fs::write(dir.join("handler.rs"), "use bson::doc;\nfn f() {}\n").unwrap();
    std::fs::write(dir.join("store/ok.rs"), "use mongodb::Client;\n").unwrap();
    let found = driver_mentions(&dir, Some(&dir.join("store")));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("handler.rs:1: use bson::doc;"));
}
