//! The committed completion scripts and man page must match the CLI; regenerate them with
//! `UPDATE_GENERATED=1 cargo test --test generated`.

use std::path::Path;

use dlq::generate::{completion_file, completions, man_page, SHELLS};

fn check(path: &Path, fresh: &[u8], stale: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, fresh).unwrap();
        return;
    }
    if std::fs::read(path).ok().as_deref() != Some(fresh) {
        stale.push(path.display().to_string());
    }
}

#[test]
fn completions_and_man_page_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for shell in SHELLS {
        check(
            &root.join("completions").join(completion_file(shell)),
            &completions(shell),
            &mut stale,
        );
    }
    check(&root.join("docs/dlq.1"), &man_page().unwrap(), &mut stale);
    assert!(
        stale.is_empty(),
        "stale generated files: {}; run UPDATE_GENERATED=1 cargo test --test generated",
        stale.join(", ")
    );
}

#[test]
fn completions_subcommand_prints_the_committed_script() {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_dlq"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, completions(clap_complete::Shell::Bash));
    assert!(String::from_utf8_lossy(&out.stdout).contains("topology"));
}
