//! Generates src/ffi/contract.rs, the Rust view of the C contract
//! (c_shim/include/wstunnel_core.h), with bindgen as a library, and checks
//! that the checked-in file is what the header gives.
//!
//! ```text
//! cargo run --manifest-path tools/contract-gen/Cargo.toml              # (re)write it
//! cargo run --manifest-path tools/contract-gen/Cargo.toml -- --check   # drift check (make test)
//! ```
//!
//! The bindgen options are the ones build.rs used when it ran bindgen at
//! build time. The module is built for two targets, x86_64 and i686, from
//! this one file: bindgen runs for each (`--target=`), its declarations must
//! come out the same for both (they do: C types become `core::ffi` aliases,
//! `size_t` `usize`), and only its layout checks differ (pointer sizes, and
//! `uint64_t` is 4-aligned on i686). Where a layout check differs it is kept
//! for each target under `cfg(target_pointer_width)`: "64" takes x86_64's,
//! "32" i686's, so a build for any other target of either width is
//! checked too, and fails to compile if its layout differs (add that target
//! to TARGETS then).
//!
//! Only libclang is needed: `-ffreestanding` makes clang use its own
//! `<stdint.h>`, so neither target's C library headers are read (the output
//! is the same as with them). `BINDGEN_EXTRA_CLANG_ARGS` is ignored. The
//! output is formatted with prettyplease (pinned by Cargo.lock), not
//! rustfmt, so that it does not depend on the rustfmt installed.
//!
//! The file records a stamp of the header (stamp.rs: a hash of its C text,
//! comments left out); build.rs refuses to build the module when the header
//! no longer has it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use quote::ToTokens;

mod stamp;
use stamp::{header_stamp, STAMP_PREFIX};

/// The contract header, relative to the repository root (as build.rs had it).
const HEADER: &str = "c_shim/include/wstunnel_core.h";
/// The generated file, relative to the repository root.
const OUTPUT: &str = "src/ffi/contract.rs";
/// The targets the module is built for, each with the
/// `target_pointer_width` that selects its layout checks.
const TARGETS: [(&str, &str); 2] = [("x86_64-unknown-linux-gnu", "64"), ("i686-unknown-linux-gnu", "32")];
const REGENERATE: &str = "cargo run --manifest-path tools/contract-gen/Cargo.toml";

fn main() -> ExitCode {
    let check = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => false,
        [a] if a == "--check" => true,
        _ => {
            eprintln!("usage: contract-gen [--check]\n  writes {OUTPUT} from {HEADER}; --check compares instead");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!("FAIL contract-gen: cannot enter the repository root {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    // Extra clang arguments from the environment would change the output
    // (bindgen also reads BINDGEN_EXTRA_CLANG_ARGS_<TARGET>).
    std::env::remove_var("BINDGEN_EXTRA_CLANG_ARGS");
    std::env::remove_var("TARGET");
    let generated = match generate() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("FAIL contract-gen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let current = fs::read_to_string(OUTPUT).ok();
    if check {
        if current.as_deref() == Some(generated.as_str()) {
            println!("ok   {OUTPUT} is what bindgen makes of {HEADER} ({})", clang());
            return ExitCode::SUCCESS;
        }
        match current {
            Some(_) => show_diff(&generated),
            None => println!("{OUTPUT} is missing"),
        }
        println!("FAIL {OUTPUT} is not what bindgen makes of {HEADER} ({}): run `{REGENERATE}`", clang());
        return ExitCode::FAILURE;
    }
    if current.as_deref() == Some(generated.as_str()) {
        println!("{OUTPUT} unchanged ({})", clang());
    } else if let Err(e) = fs::write(OUTPUT, &generated) {
        eprintln!("FAIL contract-gen: cannot write {OUTPUT}: {e}");
        return ExitCode::FAILURE;
    } else {
        println!("wrote {OUTPUT} ({})", clang());
    }
    ExitCode::SUCCESS
}

fn clang() -> String {
    bindgen::clang_version().full
}

/// The whole text of OUTPUT.
fn generate() -> Result<String, String> {
    let header = fs::read(HEADER).map_err(|e| format!("cannot read {HEADER}: {e}"))?;
    let [(t64, w64), (t32, w32)] = TARGETS;
    let (version, a) = bindings(t64)?;
    let (_, b) = bindings(t32)?;
    if a.items.len() != b.items.len() {
        return Err(format!("bindgen gives {} items for {t64}, {} for {t32}", a.items.len(), b.items.len()));
    }
    let mut items = Vec::with_capacity(a.items.len() + 16);
    for (x, y) in a.items.iter().zip(&b.items) {
        let same = x.to_token_stream().to_string() == y.to_token_stream().to_string();
        match (is_layout_check(x), is_layout_check(y)) {
            _ if same => items.push(x.clone()),
            (true, true) => {
                items.push(for_width(x, w64));
                items.push(for_width(y, w32));
            }
            _ => {
                return Err(format!(
                    "bindgen's declarations differ between {t64} and {t32}, not only its layout checks: \
                     one file cannot serve both as it is\n  {t64}: {}\n  {t32}: {}",
                    x.to_token_stream(),
                    y.to_token_stream()
                ))
            }
        }
    }
    let body = prettyplease::unparse(&syn::File { shebang: None, attrs: Vec::new(), items });
    Ok(format!(
        "\
// @generated by tools/contract-gen (bindgen {version}) from
// {HEADER}. DO NOT EDIT BY HAND: change the header,
// then run `{REGENERATE}`.
// `make test` checks that this file is what the header gives (`-- --check`).
//
// One file serves both targets of the module: bindgen's declarations are
// the same for x86_64 and i686; where its layout checks differ, each
// target's are kept, under cfg(target_pointer_width = \"{w64}\") for
// {t64} and \"{w32}\" for {t32}.
//
// build.rs refuses to build when the header no longer has this stamp:
{STAMP_PREFIX}{stamp:016x}

{body}",
        stamp = header_stamp(&header),
    ))
}

/// bindgen's view of the header for `target`, with build.rs's options, and
/// bindgen's version.
fn bindings(target: &str) -> Result<(String, syn::File), String> {
    let bindings = bindgen::Builder::default()
        .header(HEADER)
        .use_core()
        .ctypes_prefix("core::ffi")
        .allowlist_type("wst_.*")
        .allowlist_function("wst_.*")
        .allowlist_var("WST_.*")
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .clang_arg(format!("--target={target}"))
        .clang_arg("-ffreestanding")
        .formatter(bindgen::Formatter::None)
        .generate()
        .map_err(|e| format!("bindgen could not read {HEADER} for {target}: {e}"))?;
    let text = bindings.to_string();
    let version = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("/* automatically generated by rust-bindgen "))
        .and_then(|l| l.strip_suffix(" */"))
        .unwrap_or("(unknown version)")
        .to_owned();
    let file = syn::parse_file(&text).map_err(|e| format!("bindgen's output for {target} does not parse: {e}"))?;
    Ok((version, file))
}

/// bindgen's layout checks are `const _: () = { ... };` items.
fn is_layout_check(item: &syn::Item) -> bool {
    matches!(item, syn::Item::Const(c) if c.ident == "_")
}

fn for_width(item: &syn::Item, width: &str) -> syn::Item {
    let mut item = item.clone();
    if let syn::Item::Const(c) = &mut item {
        c.attrs.insert(0, syn::parse_quote!(#[cfg(target_pointer_width = #width)]));
    }
    item
}

/// `diff -u` of OUTPUT against what it should be.
fn show_diff(generated: &str) {
    let tmp: PathBuf = std::env::temp_dir().join(format!("contract-gen-{}.rs", std::process::id()));
    if fs::write(&tmp, generated).is_ok() {
        let shown = Command::new("diff")
            .args(["-u", "--label", OUTPUT, "--label", "generated from the header"])
            .arg(OUTPUT)
            .arg(&tmp)
            .status()
            .is_ok();
        let _ = fs::remove_file(&tmp);
        if shown {
            return;
        }
    }
    let current = fs::read_to_string(OUTPUT).unwrap_or_default();
    let line = current
        .lines()
        .zip(generated.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| current.lines().count().min(generated.lines().count()));
    println!("{OUTPUT} and the generated text first differ at line {}", line + 1);
}

#[cfg(test)]
mod tests {
    use super::header_stamp;

    #[test]
    fn comments_and_blanks_do_not_count() {
        let a = b"/* the contract */\n#define WST_X 1\ntypedef struct s {\n    int a; /* a */\n} s;\n";
        let b = b"/*\n * the contract, reworded\n */\n\n#define  WST_X 1 // one\ntypedef struct s { \n\tint a;\n} s;";
        assert_eq!(header_stamp(a), header_stamp(b));
    }

    #[test]
    fn code_counts() {
        let a = b"typedef struct s { int a; } s;\n";
        assert_ne!(header_stamp(a), header_stamp(b"typedef struct s { long a; } s;\n"));
        assert_ne!(header_stamp(a), header_stamp(b"typedef struct s { int a; int b; } s;\n"));
        // A comment is a blank: it still separates tokens.
        assert_ne!(header_stamp(b"int a/**/b;"), header_stamp(b"int ab;"));
        // Comment markers inside literals are text.
        assert_ne!(header_stamp(b"#define S \"/* x */\"\n"), header_stamp(b"#define S \"\"\n"));
        assert_ne!(header_stamp(b"#define C '\\''\n#define D 1\n"), header_stamp(b"#define C '\\''\n"));
    }
}
