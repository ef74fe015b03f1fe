//! docs/ingestion.md's endpoint table is rendered from the source registry: this test
//! fails when the page and the registry differ, so the docs cannot drift. Run with
//! `UPDATE_DOCS=1` to rewrite the table from the registry.

use std::path::Path;

const START: &str = "<!-- endpoint table: rendered from ingestion::sources::endpoint_table; \
                     UPDATE_DOCS=1 cargo test -p ingestion --test docs rewrites it -->";
const END: &str = "<!-- end of endpoint table -->";

#[test]
fn the_endpoint_table_matches_the_registry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ingestion.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let start = page
        .find(START)
        .unwrap_or_else(|| panic!("{} lacks the marker {START}", path.display()))
        + START.len();
    let end = start
        + page[start..]
            .find(END)
            .unwrap_or_else(|| panic!("{} lacks the marker {END}", path.display()));
    let rendered = format!("\n{}", ingestion::sources::endpoint_table());
    if page[start..end] == rendered {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{rendered}{}", &page[..start], &page[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "docs/ingestion.md's endpoint table differs from the source registry; run \
         `UPDATE_DOCS=1 cargo test -p ingestion --test docs` and commit the result.\n\
         rendered:\n{rendered}"
    );
}
