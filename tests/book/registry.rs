//! The `[[example]]` entries of Cargo.toml: how cargo finds each listing.

use std::collections::HashMap;

/// Example path (relative to the repository) -> (name, test = true?).
pub fn examples() -> HashMap<String, (String, bool)> {
    let manifest = std::fs::read_to_string(super::chapters::root().join("Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().expect("Cargo.toml parses");
    manifest
        .get("example")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let path = entry.get("path")?.as_str()?.to_owned();
            let name = entry.get("name")?.as_str()?.to_owned();
            let tested = entry.get("test").and_then(|t| t.as_bool()).unwrap_or(false);
            Some((path, (name, tested)))
        })
        .collect()
}

/// A listing must be an example named after its file, with `test = true`, so
/// `cargo test` runs its tests and `cargo run --example <file stem>` runs it.
pub fn check(examples: &HashMap<String, (String, bool)>, listing: &str) -> Result<(), String> {
    let stem = std::path::Path::new(listing)
        .file_stem()
        .unwrap()
        .to_string_lossy();
    match examples.get(listing) {
        None => Err(format!(
            "{listing} is not an [[example]] in Cargo.toml, so nothing compiles it"
        )),
        Some((name, _)) if *name != stem => Err(format!(
            "{listing} is the example `{name}`; name it `{stem}` as the chapter says"
        )),
        Some((_, false)) => Err(format!(
            "{listing}: set `test = true` so cargo test runs its tests"
        )),
        Some(_) => Ok(()),
    }
}
