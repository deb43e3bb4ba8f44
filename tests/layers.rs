//! The module layers, checked by reading `src/`: every `crate::` path a module names must
//! lead to a module of a lower layer, so the imports run one way and no two modules import
//! each other (cli -> ops -> radius -> auth -> {store, sms}, with config below them all).
//!
//! A module that is not in `LAYERS` fails the test, so a new one gets a place on purpose.

use std::path::{Path, PathBuf};

/// Modules of `src/` and their layer; a module may use only lower layers. Most entries are
/// top-level modules; `radius::packet` and `radius::dictionary` have their own entries
/// because they are the RADIUS wire format, which the config reads reply attributes in,
/// while the rest of `radius` (listener, guard, replies) sits above the decision.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: plain types and helpers that know no other module of the crate.
    ("time", 0),
    ("files", 0),
    ("phone", 0),
    ("template", 0),
    ("breaker", 0),
    // The metric families every layer counts into.
    ("ops::metrics", 0),
    ("radius::packet", 0),
    // Attribute names and types, encoded as packet attributes.
    ("radius::dictionary", 1),
    // The TOML file, in the types of the leaves.
    ("config", 2),
    // What the decision uses: storage, SMS, number checks, the log format.
    ("store", 3),
    ("sms", 3),
    ("limits", 3),
    ("logging", 3),
    // Notifications go through sms and the audit trail of the store.
    ("events", 4),
    // The directory user source logs names through `logging`; it sits beside events, and
    // `APART` keeps it from store and sms all the same.
    ("directory", 4),
    ("auth", 5),
    ("radius", 6),
    // Health, reload and systemd read the live config of the RADIUS layer.
    ("ops", 7),
    ("cli", 8),
];

/// Modules that must not use each other although their layers would allow it: the
/// directory is a user source beside store and sms (DESIGN section 10), not above them.
const APART: &[(&str, &[&str])] = &[("directory", &["store", "sms", "events"])];

fn layer(key: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == key).map(|(_, l)| *l)
}

/// The `LAYERS` entry a path `top::next` falls under: its own entry if it has one, else
/// its top-level module's.
fn entry(top: &str, next: Option<&str>) -> String {
    match next {
        Some(next) if layer(&format!("{top}::{next}")).is_some() => format!("{top}::{next}"),
        _ => top.to_string(),
    }
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The `LAYERS` entry a file belongs to: `src/sms/smtp.rs` -> `sms`, `src/time.rs` ->
/// `time`, `src/radius/packet.rs` -> `radius::packet`, with its top-level module; `None` for
/// the crate roots and the extra binaries, which may use anything.
fn module_of(src: &Path, file: &Path) -> Option<(String, String)> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts = relative.components().map(|c| {
        c.as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string()
    });
    let top = parts.next()?;
    if matches!(top.as_str(), "lib" | "main" | "bin") {
        return None;
    }
    let next = parts.next();
    Some((entry(&top, next.as_deref()), top))
}

/// Each top-level module the code names through `crate::`, with the byte offset where it
/// is named: `crate::sms::Phone` and each item of `crate::{config, sms::{Phone}}`, also over
/// several lines. Line comments are blanked first (doc links are no imports).
fn crate_paths(text: &str) -> Vec<(usize, String, Option<String>)> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => format!("{}{}\n", &line[..at], " ".repeat(line.len() - at)),
            None => format!("{line}\n"),
        })
        .collect();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        let after = &code[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                if depth == 0 && c != ',' && c != '}' {
                    item.push(c);
                }
            }
            items.push(item);
            names.extend(
                items
                    .iter()
                    .map(|item| split_path(item.trim()))
                    .filter(|(top, _)| !top.is_empty())
                    .map(|(top, next)| (at, top, next)),
            );
        } else {
            let (top, next) = split_path(after);
            names.push((at, top, next));
        }
        from = at + "crate::".len();
    }
    names
}

/// `sms::smtp::SmtpGateway` -> (`sms`, `smtp`); `sms::{a, b}` and `sms;` -> (`sms`, none).
fn split_path(path: &str) -> (String, Option<String>) {
    let word = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let top = word(path);
    let next = path[top.len()..]
        .strip_prefix("::")
        .map(word)
        .filter(|next| !next.is_empty());
    (top, next)
}

/// 1 for `src/time.rs`, 2 for `src/sms/smtp.rs`; `mod.rs` counts as its folder.
fn module_of_depth(src: &Path, file: &Path) -> usize {
    let relative = file.strip_prefix(src).unwrap();
    let depth = relative.components().count();
    if relative.ends_with("mod.rs") {
        depth - 1
    } else {
        depth
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let Some((module, top)) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer(&module) else {
            problems.push(format!(
                "{}: module '{module}' has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let line_of = |at: usize| text[..at].matches('\n').count() + 1;
        // Paths through `super::` from a file of a top-level module's folder name a sibling
        // (`super::packet`); `super::*` is a test module's glob of its own file.
        let siblings = text
            .match_indices("super::")
            .filter(|_| module_of_depth(&src, file) == 2)
            .filter_map(|(at, _)| {
                let (next, _) = split_path(&text[at + "super::".len()..]);
                (!next.is_empty()).then(|| (at, top.clone(), Some(next)))
            });
        let paths: Vec<_> = crate_paths(&text).into_iter().chain(siblings).collect();
        for (at, used_top, used_next) in paths {
            let used = entry(&used_top, used_next.as_deref());
            // Within one module only the entries of their own are layered.
            if used == module || (used_top == top && used == top && module == top) {
                continue;
            }
            let apart = APART
                .iter()
                .any(|(m, others)| *m == module && others.contains(&used_top.as_str()));
            match layer(&used) {
                Some(_) if apart => problems.push(format!(
                    "{}:{}: {module} must not use crate::{used}",
                    file.display(),
                    line_of(at)
                )),
                Some(theirs) if theirs < own => {}
                Some(theirs) => problems.push(format!(
                    "{}:{}: {module} (layer {own}) uses crate::{used} (layer {theirs})",
                    file.display(),
                    line_of(at)
                )),
                None => problems.push(format!(
                    "{}:{}: crate::{used} is not a module with a layer",
                    file.display(),
                    line_of(at)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_reads_paths_and_groups() {
    let names = |text: &str| -> Vec<String> {
        crate_paths(text)
            .into_iter()
            .map(|(_, top, _)| top)
            .collect()
    };
    assert_eq!(
        crate_paths("use crate::radius::packet::Attribute;")[0]
            .2
            .as_deref(),
        Some("packet")
    );
    assert_eq!(entry("radius", Some("packet")), "radius::packet");
    assert_eq!(entry("radius", Some("listener")), "radius");
    assert_eq!(names("use crate::sms::Phone;"), ["sms"]);
    assert_eq!(
        names("use crate::{\n    config::Config,\n    store,\n    sms::{Gateways, Message},\n};"),
        ["config", "store", "sms"]
    );
    assert_eq!(
        names("let x = crate::auth::pin::MAX; // crate::cli"),
        ["auth"]
    );
    assert!(names("/// see `crate::limits::NumberPolicy`").is_empty());
}
