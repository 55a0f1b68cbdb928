//! Tells the tests the host target triple, for `cargo metadata --filter-platform`.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    println!("cargo:rustc-env=EDGEWARD_HOST_TARGET={target}");
}
