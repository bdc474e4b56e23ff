//! The C exports of the handshake (`wst_check_request`, `wst_request_size`,
//! `wst_build_request`, `wst_parse_response`, `wst_chunked_decode`): the
//! only unsafe code between httpd and the parsers. Called as the C shim
//! calls them, with the fuzzer's data, and compared with the safe API: same
//! verdicts, outputs pointing into the caller's memory (or static storage),
//! outputs untouched on failure, and WST_ERR_ARG for a NULL pointer with a
//! length.

use std::ffi::{c_char, CStr};
use std::ptr;

use wstunnel_core::ffi::contract::{
    wst_backend_request, wst_chunked, wst_header, wst_request_check, wst_response, wst_status,
    wst_str, wst_upgrade_verdict,
};
use wstunnel_core::ffi::handshake::{
    wst_build_request, wst_check_request, wst_chunked_decode, wst_parse_response, wst_request_size,
};
use wstunnel_core::handshake::{self, ChunkedDecoder, Expect, Verdict, MAX_RESPONSE_HEADERS};

use crate::{Headers, Input, METHODS, WORKER_UPGRADES};

fn s(b: &[u8]) -> wst_str {
    wst_str {
        ptr: if b.is_empty() {
            ptr::null()
        } else {
            b.as_ptr().cast::<c_char>()
        },
        len: b.len(),
    }
}

/// # Safety
/// `x` must be a valid output string.
unsafe fn view<'a>(x: wst_str) -> &'a [u8] {
    assert!(!x.ptr.is_null(), "output string is NULL");
    if x.len == 0 {
        return &[];
    }
    // SAFETY: the export promises ptr/len of live memory.
    unsafe { std::slice::from_raw_parts(x.ptr.cast::<u8>(), x.len) }
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let method = inp.pick_or_raw(METHODS, 8);
    let worker = inp.pick_or_raw(WORKER_UPGRADES, 12);
    let proto = if inp.bool() { 1001 } else { 1000 };
    let headers = Headers::generate(&mut inp, 16);
    let hviews = headers.views();
    let mut carr: Vec<wst_header> = hviews
        .iter()
        .map(|h| wst_header {
            name: s(h.name),
            value: s(h.value),
        })
        .collect();
    let null_headers = carr.is_empty() && inp.bool();
    let hptr = if null_headers {
        ptr::null()
    } else {
        carr.as_mut_ptr().cast_const()
    };

    // --- wst_check_request
    let mut out = wst_request_check {
        verdict: wst_upgrade_verdict::WST_UPGRADE_NONE,
        protocol: s(b""),
        is_websocket: 0,
        key: s(b""),
        reason: ptr::null(),
    };
    // SAFETY: every pointer is valid for its length.
    let st =
        unsafe { wst_check_request(s(&method), proto, hptr, carr.len(), s(&worker), &mut out) };
    assert_eq!(st, wst_status::WST_OK);
    let safe = handshake::check_request(&method, proto, hviews.iter().copied(), &worker);
    let verdict = match safe.verdict {
        Verdict::Ok => wst_upgrade_verdict::WST_UPGRADE_OK,
        Verdict::None => wst_upgrade_verdict::WST_UPGRADE_NONE,
        Verdict::Mismatch => wst_upgrade_verdict::WST_UPGRADE_MISMATCH,
        Verdict::BadRequest => wst_upgrade_verdict::WST_UPGRADE_BAD_REQUEST,
    };
    assert_eq!(out.verdict, verdict);
    // SAFETY: outputs of a successful call.
    let (protocol, key) = unsafe { (view(out.protocol), view(out.key)) };
    assert_eq!(protocol, safe.protocol);
    assert_eq!(key, safe.key);
    assert_eq!(out.is_websocket != 0, safe.is_websocket);
    // SAFETY: reason is a static C string.
    assert_eq!(unsafe { CStr::from_ptr(out.reason) }, safe.reason);

    // A NULL pointer with a length is refused, and the output left alone.
    let before = out.verdict;
    // SAFETY: the export checks the pointer before any use.
    let st = unsafe {
        wst_check_request(
            wst_str {
                ptr: ptr::null(),
                len: 3,
            },
            proto,
            hptr,
            carr.len(),
            s(&worker),
            &mut out,
        )
    };
    assert_eq!(st, wst_status::WST_ERR_ARG);
    assert_eq!(out.verdict, before);

    // --- wst_request_size / wst_build_request
    let proto_sent = if protocol.is_empty() {
        b"websocket".to_vec()
    } else {
        protocol.to_vec()
    };
    let req = wst_backend_request {
        method: s(&method),
        path: s(b"/p?q"),
        host: s(b"127.0.0.1:1"),
        headers: hptr,
        n_headers: carr.len(),
        protocol: s(&proto_sent),
        add_forwarded: i32::from(inp.bool()),
        forwarded_for: s(b"127.0.0.1"),
        forwarded_host: s(b"h"),
        forwarded_server: s(b""),
    };
    // SAFETY: req and everything it points to is valid.
    let size = unsafe { wst_request_size(&req) };
    let mut buf = vec![0xa5u8; size + 1];
    let mut written = usize::MAX;
    // SAFETY: buf is valid for size + 1 bytes.
    let st = unsafe { wst_build_request(&req, buf.as_mut_ptr(), buf.len(), &mut written) };
    let sreq = handshake::BackendRequest {
        method: &method,
        path: b"/p?q",
        host: b"127.0.0.1:1",
        headers: hviews.iter().copied(),
        protocol: &proto_sent,
        add_forwarded: req.add_forwarded != 0,
        forwarded_for: b"127.0.0.1",
        forwarded_host: b"h",
        forwarded_server: b"",
    };
    let mut sbuf = vec![0u8; handshake::request_size(&sreq)];
    match handshake::build_request(&sreq, &mut sbuf[..]) {
        Ok(n) => {
            assert_eq!(st, wst_status::WST_OK);
            assert_eq!(written, n);
            assert_eq!(&buf[..n], &sbuf[..n]);
            assert_eq!(buf[n], 0xa5, "wrote past the request");
            if n > 0 {
                let mut w2 = usize::MAX;
                // SAFETY: as above, a shorter capacity.
                let st = unsafe { wst_build_request(&req, buf.as_mut_ptr(), n - 1, &mut w2) };
                assert_eq!(st, wst_status::WST_ERR_SPACE);
                assert_eq!(w2, usize::MAX, "written set on failure");
            }
        }
        Err(_) => {
            assert_eq!(st, wst_status::WST_ERR_INVALID);
            assert_eq!(written, usize::MAX, "written set on failure");
        }
    }

    // --- wst_parse_response against the request check above
    let resp = inp.bytes(600).to_vec();
    let head = inp.u8() % 8 == 0;
    // As the shim does: a few header slots (here 0 to 16), and exactly as
    // many as WST_ERR_SPACE asks for when the head has more.
    let few = usize::from(inp.u8() % 17);
    let mut slots = vec![wst_header::default(); few];
    // SAFETY: a zeroed wst_response is a valid bit pattern (C struct of ints and pointers).
    let mut r: wst_response = unsafe { std::mem::zeroed() };
    r.headers = slots.as_mut_ptr();
    r.headers_cap = slots.len();
    // SAFETY: resp is valid for its length; out is a valid struct; r's
    // slots are valid for headers_cap entries.
    let mut st =
        unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &out, i32::from(head), &mut r) };
    if st == wst_status::WST_ERR_SPACE {
        assert!(r.n_headers > few && r.n_headers <= MAX_RESPONSE_HEADERS, "{} > {few}", r.n_headers);
        slots = vec![wst_header::default(); r.n_headers];
        r.headers = slots.as_mut_ptr();
        r.headers_cap = slots.len();
        // SAFETY: as above.
        st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &out, i32::from(head), &mut r) };
    }
    let expect = Expect {
        protocol,
        is_websocket: out.is_websocket != 0,
        key,
    };
    let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    match handshake::parse_response(&resp, &expect, head, &mut hs) {
        None => assert_eq!(st, wst_status::WST_PARTIAL),
        Some(p) => {
            assert_eq!(st, wst_status::WST_OK);
            assert_eq!(r.status, i32::from(p.status));
            assert_eq!(r.header_len, p.header_len);
            assert_eq!(r.n_headers, p.headers.len());
            for (c, h) in slots.iter().zip(p.headers) {
                // SAFETY: outputs of a successful call, pointing into resp.
                let (n, v) = unsafe { (view(c.name), view(c.value)) };
                assert_eq!(n, h.name.as_bytes());
                assert_eq!(v, h.value);
                assert!(n.is_empty() || crate::points_into(n, &resp));
            }
            // SAFETY: why is a static C string.
            assert_eq!(unsafe { CStr::from_ptr(r.why) }, p.why.text());
        }
    }

    // --- wst_chunked_decode, whole input, against the safe decoder
    let mut body = inp.rest().to_vec();
    let mut body2 = body.clone();
    let mut cst = wst_chunked {
        remaining: 0,
        state: 0,
        line_len: 0,
    };
    let (mut dl, mut cons) = (usize::MAX, usize::MAX);
    // SAFETY: all pointers valid; body valid for its length.
    let st =
        unsafe { wst_chunked_decode(&mut cst, body.as_mut_ptr(), body.len(), &mut dl, &mut cons) };
    let mut d = ChunkedDecoder::default();
    match d.decode(&mut body2) {
        Ok(res) => {
            assert!(st == wst_status::WST_OK || st == wst_status::WST_DONE);
            assert_eq!(st == wst_status::WST_DONE, res.done);
            assert_eq!((dl, cons), (res.data_len, res.consumed));
            assert_eq!(&body[..dl], &body2[..dl]);
        }
        Err(_) => {
            assert_eq!(st, wst_status::WST_ERR_INVALID);
            assert_eq!(
                (dl, cons),
                (usize::MAX, usize::MAX),
                "outputs set on failure"
            );
        }
    }
    assert_eq!(
        (cst.remaining, cst.state, cst.line_len),
        (d.remaining, d.state, d.line_len)
    );
    // A corrupted state is refused and left alone.
    let mut bad = wst_chunked {
        remaining: 1,
        state: 999,
        line_len: 0,
    };
    // SAFETY: as above.
    let st =
        unsafe { wst_chunked_decode(&mut bad, body.as_mut_ptr(), body.len(), &mut dl, &mut cons) };
    assert_eq!(st, wst_status::WST_ERR_ARG);
    assert_eq!(bad.state, 999);
}
