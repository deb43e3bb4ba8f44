//! Every configuration example in the README is a working config: each `toml` block that
//! defines gateways, SMTP servers, events or groups is added to the bundled example config and must
//! pass `otpgate check-config`. The walk-through's spool command runs as written, the serials
//! shown have the real format, and the `Otpgate-Serial` recipe names `return_serial`.

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
            ["[gateway.", "[smtp.", "[[event]]", "[group.", "[directory]"]
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
        let block = with_real_files(block, dir.path());
        let config = dir.path().join("readme.toml");
        std::fs::write(&config, format!("{base}\n{block}")).unwrap();
        let (ok, _, err) = common::cli(&config, &["check-config"], None);
        assert!(ok, "README example does not check out:\n{block}\n{err}");
    }
}

/// `block` with each `/etc/otpgate/NAME` file made in `dir`: a CA certificate for `.pem`,
/// a long secret otherwise, so that the directory examples are checked with real files.
fn with_real_files(block: &str, dir: &std::path::Path) -> String {
    let mut block = block.to_string();
    while let Some(start) = block.find("/etc/otpgate/") {
        let end = start + block[start..].find('"').unwrap();
        let name = block[start + "/etc/otpgate/".len()..end].to_string();
        let file = dir.join(&name);
        let content = if name.ends_with(".pem") {
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .unwrap()
                .cert
                .pem()
        } else {
            "a-long-secret-read-from-a-file\n".to_string()
        };
        std::fs::write(&file, content).unwrap();
        block.replace_range(start..end, &file.display().to_string());
    }
    block
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

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The walk-through's command that reads the code from the spool folder, run as written
/// (from a folder whose `var/sms-outgoing` is the server's spool), prints the code the
/// server sent, and that code logs in.
#[test]
fn the_walk_through_reads_the_code_from_the_spool_folder_as_written() {
    let readme = readme();
    let command = readme
        .lines()
        .find(|l| l.starts_with("OTP=$(") && l.contains("var/sms-outgoing/"))
        .expect("the walk-through reads the OTP from var/sms-outgoing/");
    // The walk-through runs the example config, whose SMS text is the code alone.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/otpgate.toml")).unwrap();
    let sms_text = example
        .lines()
        .find(|l| l.starts_with("sms_text = "))
        .unwrap();
    let (dir, config) = common::Server::prepare(&common::Options::default());
    let text = std::fs::read_to_string(&config).unwrap();
    let test_text = text.lines().find(|l| l.starts_with("sms_text = ")).unwrap();
    std::fs::write(&config, text.replace(test_text, sms_text)).unwrap();
    common::enroll_alice(&config);
    let server = common::Server::start(dir, config);
    let challenge = server.login(common::PIN);
    assert_eq!(challenge.code, "Access-Challenge", "{}", challenge.output);
    let (_, sent) = server.wait_for_sms(1);

    let walk = tempfile::tempdir().unwrap();
    std::fs::create_dir(walk.path().join("var")).unwrap();
    std::os::unix::fs::symlink(server.spool(), walk.path().join("var/sms-outgoing")).unwrap();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(walk.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{command}: {output:?}");
    let otp = String::from_utf8(output.stdout).unwrap();
    assert_eq!(otp.trim_end(), sent, "{command}");
    assert_eq!(
        server.answer(&challenge.state(), otp.trim_end()).code,
        "Access-Accept"
    );
}

/// Every serial the README shows has the form `token add` prints: `SMS` and 16 hex digits.
#[test]
fn serials_in_the_readme_have_the_real_format() {
    let (dir, config) = common::Server::prepare(&common::Options::default());
    let serial = common::enroll_alice(&config);
    drop(dir);
    let shape = |s: &str| {
        s.len() == 19
            && s.starts_with("SMS")
            && s[3..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    };
    assert!(shape(&serial), "token add printed {serial}");
    let readme = readme();
    let shown: Vec<&str> = readme
        .match_indices("SMS")
        .map(|(at, _)| {
            let rest = &readme[at..];
            let end = rest[3..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .map_or(rest.len(), |i| i + 3);
            &rest[..end]
        })
        .filter(|s| s.len() > 3 && s[3..].bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(shown.len() >= 4, "{shown:?}");
    for s in shown {
        assert!(
            shape(s),
            "the README shows serial {s}, token add prints e.g. {serial}"
        );
    }
}

/// The `Otpgate-Serial` recipe works only with `[server] return_serial = true`, and says so.
#[test]
fn the_otpgate_serial_recipe_says_it_needs_return_serial() {
    let readme = readme();
    let output = readme
        .find("#     Otpgate-Serial = ")
        .expect("the recipe shows radclient printing Otpgate-Serial");
    // The recipe: from the paragraph before its command block to the output line.
    let block = readme[..output].rfind("```sh").unwrap();
    let paragraph = readme[..block].trim_end().rfind("\n\n").unwrap();
    let recipe = &readme[paragraph..output];
    assert!(
        recipe.contains("return_serial = true") && recipe.contains("[server]"),
        "{recipe}"
    );
}
