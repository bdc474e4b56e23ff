//! Generates the Rust view of the C contract (c_shim/include/wstunnel_core.h)
//! with bindgen. Only the contract's own items are allowed through, so the
//! Rust core never sees an httpd or APR type.
use std::env;
use std::path::PathBuf;

fn main() {
    let header = "c_shim/include/wstunnel_core.h";
    println!("cargo:rerun-if-changed={header}");
    let target = env::var("TARGET").unwrap_or_default();
    let mut builder = bindgen::Builder::default()
        .header(header)
        .use_core()
        .ctypes_prefix("core::ffi")
        .allowlist_type("wst_.*")
        .allowlist_function("wst_.*")
        .allowlist_var("WST_.*")
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false);
    if !target.is_empty() {
        builder = builder.clang_arg(format!("--target={target}"));
    }
    let bindings = builder.generate().expect("bindgen could not read the contract header");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("contract.rs");
    bindings.write_to_file(out).expect("write contract.rs");
}
