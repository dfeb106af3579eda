//! `compile_fail` blocks must fail to compile, with the error code they name,
//! and the compiler's message shown after them must be the one rustc prints.
//!
//! skeptic cannot check this (it only builds and runs), and stable rustdoc
//! ignores the error code, so each block is compiled here with rustc against
//! the may rlib this test run was built with. The chapter shows the message
//! from a `.stderr` file included in the ```text block right after the
//! `compile_fail` block; `BLESS=1` rewrites that file from rustc's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fences::Block;

/// `target/<profile>/deps`, where this test binary and the rlibs live.
fn deps_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The newest `lib<name>-*.rlib`: the one this `cargo test` run just built
/// (older ones linger in `deps/` after dependency or compiler changes).
fn newest_rlib(deps: &Path, name: &str) -> Option<PathBuf> {
    fs::read_dir(deps)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file.starts_with(&format!("lib{name}-")) && file.ends_with(".rlib")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// Remove rustdoc's hidden-line marker (`# `), as mdBook and skeptic do.
fn unhide(body: &str) -> String {
    body.lines()
        .map(|line| {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("# ") {
                rest
            } else if t == "#" {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// rustc's message as a reader would see it from `cargo build`: the snippet
/// is compiled as `src/main.rs` from its own folder, so paths read as in a
/// cargo project, and rustc's closing "aborting due to" line, which cargo
/// replaces with its own summary, is dropped.
fn as_shown(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.starts_with("error: aborting due to"))
        .collect();
    let mut text = lines.join("\n");
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    format!("{}\n", text.trim())
}

/// Compile `block`; check that it fails with its error codes and that rustc's
/// message is the one in `shown` (the `.stderr` file the chapter includes).
pub fn check(block: &Block, shown: &Path) -> Result<(), String> {
    let codes = block.error_codes();
    if codes.is_empty() {
        return Err(
            "a compile_fail block must name its error code, e.g. ```rust,compile_fail,E0373".into(),
        );
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    fs::create_dir(dir.path().join("src")).map_err(|e| e.to_string())?;
    fs::write(dir.path().join("src/main.rs"), unhide(&block.body)).map_err(|e| e.to_string())?;

    let deps = deps_dir();
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc
        .current_dir(dir.path())
        .arg("src/main.rs")
        .args([
            "--edition=2021",
            "--crate-type=bin",
            "--emit=metadata",
            "-o",
        ])
        .arg(dir.path().join("snippet.rmeta"))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()));
    for krate in ["may", "may_patterns"] {
        let rlib =
            newest_rlib(&deps, krate).ok_or(format!("no lib{krate} rlib in {}", deps.display()))?;
        rustc
            .arg("--extern")
            .arg(format!("{krate}={}", rlib.display()));
    }
    let output = rustc
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Err(format!(
            "the block compiles, but is marked compile_fail,{}",
            codes.join(",")
        ));
    }
    let missing: Vec<_> = codes
        .iter()
        .filter(|c| !stderr.contains(&format!("error[{c}]")))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the block fails to compile, but not with {missing:?}; rustc said:\n{stderr}"
        ));
    }
    compare_with_shown(&as_shown(&stderr), shown)
}

fn compare_with_shown(actual: &str, shown: &Path) -> Result<(), String> {
    let name = super::chapters::relative(&shown.canonicalize().unwrap_or(shown.to_path_buf()));
    let expected = fs::read_to_string(shown).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if std::env::var_os("BLESS").is_some() {
        fs::write(shown, actual).map_err(|e| format!("cannot bless {name}: {e}"))?;
        println!("blessed {name}");
        return Ok(());
    }
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Err(format!(
        "{name} is not what {rustc} prints for the block (re-bless with \
         `BLESS=1 cargo test --test book compile_fail` if intended); rustc said:\n{actual}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_message_drops_only_rustcs_closing_line() {
        let stderr = "error[E0373]: closure may outlive\n --> src/main.rs:5:21\n  |  \n\n\n\
                      error: aborting due to 1 previous error\n\n\
                      For more information about this error, try `rustc --explain E0373`.\n";
        assert_eq!(
            as_shown(stderr),
            "error[E0373]: closure may outlive\n --> src/main.rs:5:21\n  |\n\n\
             For more information about this error, try `rustc --explain E0373`.\n"
        );
    }
}
