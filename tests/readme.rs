//! Every configuration example in the README is a working config: each `toml` block that
//! defines gateways, SMTP servers, events or groups is added to the bundled example config and must
//! pass `otpgate check-config`.

mod common;

#[test]
fn every_config_example_in_the_readme_checks_out() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/etc/otpgate.toml")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| {
            ["[gateway.", "[smtp.", "[[event]]", "[group."]
                .iter()
                .any(|k| block.contains(k))
        })
        .collect();
    assert!(blocks.len() >= 6, "found {} examples", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    for block in blocks {
        // Tables the README shows again replace the example's own.
        let base = ["[gateway.local]", "[gateway.clickatell]"]
            .iter()
            .filter(|header| block.contains(*header))
            .fold(example.clone(), |text, header| without_table(&text, header));
        let config = dir.path().join("readme.toml");
        std::fs::write(&config, format!("{base}\n{block}")).unwrap();
        let (ok, _, err) = common::cli(&config, &["check-config"], None);
        assert!(ok, "README example does not check out:\n{block}\n{err}");
    }
}

/// `text` without the table that starts at `header` (up to the next table).
fn without_table(text: &str, header: &str) -> String {
    let Some(start) = text.find(header) else {
        return text.to_string();
    };
    let end = text[start + header.len()..]
        .find("\n[")
        .map_or(text.len(), |i| start + header.len() + i + 1);
    format!("{}{}", &text[..start], &text[end..])
}

/// The README's first command is `cargo run --release -- serve ...`: with two binaries in the
/// package, cargo needs `default-run` to know which one that is.
#[test]
fn cargo_run_knows_which_binary_the_readme_means() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- serve --config etc/otpgate.toml"));
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let binaries = manifest.matches("[[bin]]").count();
    assert!(
        binaries < 2 || manifest.contains("default-run = \"otpgate\""),
        "{binaries} binaries, no default-run"
    );
}
