//! Replays every seed in fuzz/corpus/<target>/ and every past crash in
//! fuzz/regressions/<target>/ through the target's checks: a plain
//! `cargo test` (no libFuzzer), so a fixed crash stays fixed.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(rd) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = fs::read(&f).unwrap();
            eprintln!("{target}: {}", f.display());
            run(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no seed for {target}");
}

macro_rules! replay_tests {
    ($($t:ident),*) => {$(
        #[test]
        fn $t() {
            replay(stringify!($t), wstunnel_fuzz::targets::$t::run);
        }
    )*};
}

replay_tests!(
    check_request,
    build_request,
    parse_response,
    chunked,
    tunnel,
    handshake_ffi,
    frames
);
