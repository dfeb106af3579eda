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
/// A program that outgrew one file is a folder, `<chapter>/<program>/main.rs`
/// plus its modules: `main.rs` is the example named after the folder, and
/// every other file there is one of its modules, compiled with it.
pub fn check(examples: &HashMap<String, (String, bool)>, listing: &str) -> Result<(), String> {
    let path = std::path::Path::new(listing);
    let folder_main = path.with_file_name("main.rs");
    let (listing, expected) = match path.parent().and_then(|p| p.file_name()) {
        Some(program) if super::chapters::root().join(&folder_main).is_file() => (
            folder_main.to_string_lossy().into_owned(),
            program.to_string_lossy().into_owned(),
        ),
        _ => (
            listing.to_owned(),
            path.file_stem().unwrap().to_string_lossy().into_owned(),
        ),
    };
    match examples.get(&listing) {
        None if included_by_a_tested_example(examples, &listing) => Ok(()),
        None => Err(format!(
            "{listing} is not an [[example]] in Cargo.toml, so nothing compiles it"
        )),
        Some((name, _)) if *name != expected => Err(format!(
            "{listing} is the example `{name}`; name it `{expected}` as the chapter says"
        )),
        Some((_, false)) => Err(format!(
            "{listing}: set `test = true` so cargo test runs its tests"
        )),
        Some(_) => Ok(()),
    }
}

/// A file that steps share (`<chapter>/steps_common.rs`) is no example of
/// its own: a tested example beside it includes it with
/// `#[path = "<file name>"] mod ...;`, so cargo compiles it, and runs its
/// tests, with that example.
fn included_by_a_tested_example(examples: &HashMap<String, (String, bool)>, listing: &str) -> bool {
    let path = std::path::Path::new(listing);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let attribute = format!("#[path = \"{name}\"]");
    examples.iter().any(|(example, (_, tested))| {
        let example = std::path::Path::new(example);
        *tested
            && example.parent() == path.parent()
            && std::fs::read_to_string(super::chapters::root().join(example))
                .is_ok_and(|source| source.contains(&attribute))
    })
}
