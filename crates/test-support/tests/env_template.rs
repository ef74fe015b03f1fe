//! `env.template` stays true: it lists every field of the settings structs in
//! `crates/config` (and nothing that is not one), and the default it shows for each is
//! the value the loader really uses. A new setting without its line fails here.

use std::collections::BTreeMap;
use std::path::Path;

/// Documented but not read by `crates/config`: tracing reads `RUST_LOG`; test-support
/// reads the test servers.
const NOT_IN_CONFIG: [&str; 3] = ["RUST_LOG", "TEST_DATABASE_URL", "TEST_REDIS_URL"];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/test-support sits two levels below the root")
}

/// `#NAME=default` lines of env.template.
fn documented() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("env.template")).unwrap();
    let mut settings = BTreeMap::new();
    for line in text.lines() {
        let Some((name, default)) = line.strip_prefix('#').and_then(|l| l.split_once('=')) else {
            continue;
        };
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            let previous = settings.insert(name.to_owned(), default.to_owned());
            assert!(previous.is_none(), "{name} is listed twice in env.template");
        }
    }
    settings
}

/// Upper-cased `pub` fields of every `pub struct *Settings` in crates/config/src,
/// leaving out `#[serde(flatten)]` fields (their structs are read on their own).
fn settings_fields() -> Vec<String> {
    let dir = repo_root().join("crates/config/src");
    let mut fields = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut in_settings = false;
        let mut flatten_next = false;
        for line in source.lines().map(str::trim) {
            if line.starts_with("pub struct ") && line.contains("Settings") && line.ends_with('{') {
                in_settings = true;
            } else if in_settings && line == "}" {
                in_settings = false;
            } else if in_settings && line.starts_with("#[serde(flatten)]") {
                flatten_next = true;
            } else if in_settings && line.starts_with("pub ") {
                let name = line["pub ".len()..].split(':').next().unwrap().trim();
                if !std::mem::take(&mut flatten_next) {
                    fields.push(name.to_ascii_uppercase());
                }
            }
        }
    }
    fields.sort();
    fields
}

#[test]
fn every_setting_is_documented_and_nothing_else() {
    let documented = documented();
    let fields = settings_fields();
    assert!(
        fields.len() > 20,
        "parsed too few settings fields: {fields:?}"
    );
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !documented.contains_key(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from env.template (add `#NAME=default` with a comment): {missing:?}"
    );
    let unknown: Vec<&String> = documented
        .keys()
        .filter(|k| !fields.contains(k) && !NOT_IN_CONFIG.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "env.template lists settings crates/config does not have: {unknown:?}"
    );
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    let defaults = format!("{:?}", config::Settings::from_pairs([]).unwrap());
    for (name, value) in documented() {
        if NOT_IN_CONFIG.contains(&name.as_str()) {
            continue;
        }
        let with_documented = config::Settings::from_pairs([(name.as_str(), value.clone())])
            .unwrap_or_else(|e| panic!("env.template's {name}={value} does not load: {e}"));
        assert_eq!(
            format!("{with_documented:?}"),
            defaults,
            "env.template says {name}={value}, but that is not the default"
        );
    }
}
