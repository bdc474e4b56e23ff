// The stamp src/ffi/contract.rs records of the header it was generated from,
// shared by tools/contract-gen (`mod stamp`) and the module's build.rs
// (`include!`): an FNV-1a 64 hash of the header's C text without its
// comments and with its white space normalised, so that only a change that
// could change what bindgen makes of the header calls for regenerating
// (bindgen runs with generate_comments(false)). (Blanks inside a string
// literal are normalised too: the drift check, which compares the whole
// generated text, still sees such a change.)

/// The line of src/ffi/contract.rs that holds the stamp, before it (hex).
pub const STAMP_PREFIX: &str = "// header stamp (FNV-1a 64 of its C text): ";

/// The stamp of a header's bytes.
pub fn header_stamp(header: &[u8]) -> u64 {
    c_text(header).iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The header without comments (each block comment becomes one space, as
/// in C), every run of blanks one space, lines trimmed, empty lines gone.
fn c_text(src: &[u8]) -> Vec<u8> {
    #[derive(PartialEq)]
    enum S {
        Code,
        Line,
        Block,
        Quoted(u8),
    }
    let mut code = Vec::with_capacity(src.len());
    let mut state = S::Code;
    let mut i = 0;
    while let Some(&c) = src.get(i) {
        let next = src.get(i + 1).copied();
        match state {
            S::Code if c == b'/' && next == Some(b'*') => {
                code.push(b' ');
                state = S::Block;
                i += 1;
            }
            S::Code if c == b'/' && next == Some(b'/') => state = S::Line,
            S::Code => {
                if c == b'"' || c == b'\'' {
                    state = S::Quoted(c);
                }
                code.push(c);
            }
            S::Line if c == b'\n' => {
                code.push(c);
                state = S::Code;
            }
            S::Line => {}
            S::Block if c == b'*' && next == Some(b'/') => {
                state = S::Code;
                i += 1;
            }
            S::Block => {}
            S::Quoted(q) => {
                code.push(c);
                if c == b'\\' {
                    if let Some(n) = next {
                        code.push(n);
                        i += 1;
                    }
                } else if c == q {
                    state = S::Code;
                }
            }
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(code.len());
    for line in code.split(|&b| b == b'\n') {
        let words: Vec<&[u8]> = line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).collect();
        if !words.is_empty() {
            out.extend_from_slice(&words.join(&b' ')[..]);
            out.push(b'\n');
        }
    }
    out
}
