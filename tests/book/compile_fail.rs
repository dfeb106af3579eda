//! `compile_fail` blocks must fail to compile, with the error code they name.
//!
//! skeptic cannot check this (it only builds and runs), and stable rustdoc
//! ignores the error code, so each block is compiled here with rustc against
//! the may rlib this test run was built with.

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

pub fn check(block: &Block) -> Result<(), String> {
    let codes = block.error_codes();
    if codes.is_empty() {
        return Err(
            "a compile_fail block must name its error code, e.g. ```rust,compile_fail,E0373".into(),
        );
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("snippet.rs");
    fs::write(&file, unhide(&block.body)).map_err(|e| e.to_string())?;

    let deps = deps_dir();
    let mut rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    rustc
        .arg(&file)
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
    Ok(())
}
