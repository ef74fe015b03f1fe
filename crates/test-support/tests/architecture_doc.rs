//! docs/ARCHITECTURE.md stays true: every relative link points at a file that exists,
//! and every step of its walkthroughs names a symbol its linked file defines. Renaming
//! or moving a function a walkthrough passes through fails here until the page follows.

use std::path::{Path, PathBuf};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/test-support sits two levels below the root")
}

fn architecture() -> String {
    std::fs::read_to_string(repo_root().join("docs/ARCHITECTURE.md")).unwrap()
}

/// Every `](target)` link of `text` that is not a web address or an anchor.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if !target.starts_with("http") && !target.starts_with('#') {
            links.push(target.split('#').next().unwrap_or(target).to_owned());
        }
        rest = &rest[end..];
    }
    links
}

/// Whether `source` defines `name` (a function, type, trait, constant or module).
fn defines(source: &str, name: &str) -> bool {
    const KEYWORDS: [&str; 8] = [
        "fn ", "struct ", "enum ", "trait ", "type ", "const ", "static ", "mod ",
    ];
    KEYWORDS.iter().any(|k| {
        let needle = format!("{k}{name}");
        source.match_indices(&needle).any(|(at, _)| {
            let before_ok = source[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let after_ok = source[at + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_');
            before_ok && after_ok
        })
    })
}

/// One walkthrough step: the linked file (relative to the repository) and the symbol
/// named right after the link.
struct Step {
    line: String,
    file: PathBuf,
    symbol: String,
}

fn walkthrough_steps(doc: &str) -> (usize, Vec<Step>) {
    let section = doc
        .split("\n## Walkthroughs\n")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a Walkthroughs section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let journeys = section.lines().filter(|l| l.starts_with("### ")).count();
    let mut steps = Vec::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let target = rest
            .split_once("](")
            .and_then(|(_, t)| t.split_once(')'))
            .map(|(t, _)| t)
            .unwrap_or_else(|| panic!("walkthrough step without a file link: {line}"));
        let after_link = &rest[rest.find(&format!("]({target})")).unwrap() + target.len() + 3..];
        let symbol = after_link
            .trim_start()
            .strip_prefix('`')
            .and_then(|s| s.split_once('`'))
            .map(|(s, _)| s)
            .unwrap_or_else(|| {
                panic!("walkthrough step without a `symbol` after its link: {line}")
            });
        steps.push(Step {
            line: line.to_owned(),
            file: repo_root().join("docs").join(target),
            symbol: symbol.rsplit("::").next().unwrap_or(symbol).to_owned(),
        });
    }
    (journeys, steps)
}

#[test]
fn every_relative_link_of_the_architecture_page_points_at_a_file() {
    let doc = architecture();
    let links = relative_links(&doc);
    assert!(links.len() > 20, "the page links into the code");
    let missing: Vec<&String> = links
        .iter()
        .filter(|l| !repo_root().join("docs").join(l).exists())
        .collect();
    assert!(missing.is_empty(), "links to nothing: {missing:?}");
}

#[test]
fn every_walkthrough_step_names_a_symbol_its_file_defines() {
    let (journeys, steps) = walkthrough_steps(&architecture());
    assert!(journeys >= 5, "five journeys at least, found {journeys}");
    assert!(steps.len() > 30, "the journeys have their steps");
    let wrong: Vec<String> = steps
        .iter()
        .filter(|s| std::fs::read_to_string(&s.file).map_or(true, |src| !defines(&src, &s.symbol)))
        .map(|s| s.line.clone())
        .collect();
    assert!(
        wrong.is_empty(),
        "steps naming what their file does not define:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_tells_a_definition_from_a_mention() {
    let src = "pub async fn store_all() {}\nfn store(x: u8) {}\nlet restore = store_all();";
    assert!(defines(src, "store"));
    assert!(defines(src, "store_all"));
    assert!(!defines(src, "restore"));
    assert!(!defines(src, "stor"));
}
