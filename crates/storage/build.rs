//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the folder's
//! files at compile time, and cargo does not notice a new file in it on its own.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
