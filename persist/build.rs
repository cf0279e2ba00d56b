//! `sqlx::migrate!` embeds the migration files at compile time; on stable Rust a new file in
//! the folder does not make cargo rebuild the crate unless told so here.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
