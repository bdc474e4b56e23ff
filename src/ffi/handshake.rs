//! C exports of the handshake (see c_shim/include/wstunnel_core.h): thin
//! wrappers that check every pointer, view the C data as slices, call the
//! safe code in [`crate::handshake`], and write outputs only on success.
//!
//! Pointer rules shared by every export:
//! * a `(ptr, len)` pair (a `wst_str`, a header array, a buffer) may have a
//!   NULL `ptr` only when `len` is 0, and `len` must not exceed
//!   `isize::MAX` bytes; otherwise `WST_ERR_ARG`;
//! * a pointer to a struct (input or output) must be non-NULL and aligned;
//!   otherwise `WST_ERR_ARG`;
//! * output strings are never NULL: an empty one points at a static "".

use core::ffi::{c_char, c_int, c_uchar, CStr};
use core::mem::MaybeUninit;
use core::ptr;
use core::slice;

use super::contract::{
    self, wst_backend_request, wst_body_mode, wst_chunked, wst_header, wst_request_check,
    wst_response, wst_response_kind, wst_status, wst_str, wst_upgrade_verdict,
};
use crate::handshake::{
    self, BackendRequest, BodyMode, BuildError, ChunkedDecoder, ChunkedError, Expect, Header,
    ResponseKind, Verdict, MAX_RESPONSE_HEADERS,
};
use crate::handshake::response::Why;

const _: () = assert!(contract::WST_MAX_RESPONSE_HEADERS as usize == MAX_RESPONSE_HEADERS);

/// What an empty output string points at.
const EMPTY: &CStr = c"";

/// Views a `(ptr, len)` pair of bytes; None if it is not a valid pair.
///
/// # Safety
/// A non-NULL `ptr` must be valid for reads of `len` bytes for `'a`, and the
/// bytes must not be written during `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: ptr is non-NULL, u8 has no alignment requirement, len fits
    // isize, and the caller guarantees ptr is valid for len bytes for 'a.
    Some(unsafe { slice::from_raw_parts(ptr, len) })
}

/// Views a `wst_str`.
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn str_arg<'a>(s: wst_str) -> Option<&'a [u8]> {
    // SAFETY: forwarded to the caller.
    unsafe { bytes(s.ptr.cast::<u8>(), s.len) }
}

/// Views the caller's header array, after checking every string in it.
///
/// # Safety
/// A non-NULL `headers` must point to `n` initialised `wst_header`s, and
/// every string in them must be valid as for [`bytes`], all for `'a`.
unsafe fn header_array<'a>(headers: *const wst_header, n: usize) -> Option<&'a [wst_header]> {
    if n == 0 {
        return Some(&[]);
    }
    if headers.is_null()
        || !headers.is_aligned()
        || n > isize::MAX as usize / size_of::<wst_header>()
    {
        return None;
    }
    // SAFETY: non-NULL, aligned, n * size fits isize, and the caller
    // guarantees n initialised elements that live for 'a.
    let hs = unsafe { slice::from_raw_parts(headers, n) };
    let ok = hs.iter().all(|h| {
        (h.name.len == 0 || !h.name.ptr.is_null())
            && (h.value.len == 0 || !h.value.ptr.is_null())
            && h.name.len <= isize::MAX as usize
            && h.value.len <= isize::MAX as usize
    });
    ok.then_some(hs)
}

/// One element of an array returned by [`header_array`] as a [`Header`].
///
/// # Safety
/// `h` comes from an array checked by [`header_array`], whose safety
/// contract holds for `'a`.
unsafe fn header_view<'a>(h: &'a wst_header) -> Header<'a> {
    // SAFETY: header_array checked the pairs; the caller vouches for the
    // memory behind them for 'a.
    let view = |x: wst_str| unsafe { str_arg(x) }.unwrap_or(&[]);
    Header {
        name: view(h.name),
        value: view(h.value),
    }
}

/// The checked header array as the iterator the safe code takes.
///
/// # Safety
/// `hs` comes from [`header_array`], whose safety contract holds for `'a`.
unsafe fn headers_iter<'a>(hs: &'a [wst_header]) -> impl Iterator<Item = Header<'a>> + Clone {
    // SAFETY: every element is from a checked array (this fn's contract).
    hs.iter().map(|h| unsafe { header_view(h) })
}

/// A `wst_str` for a slice the output may point to.
fn out_str(s: &[u8]) -> wst_str {
    if s.is_empty() {
        wst_str {
            ptr: EMPTY.as_ptr(),
            len: 0,
        }
    } else {
        wst_str {
            ptr: s.as_ptr().cast::<c_char>(),
            len: s.len(),
        }
    }
}

/// A struct pointer is usable: non-NULL and aligned.
fn usable<T>(p: *const T) -> bool {
    !p.is_null() && p.is_aligned()
}

// ---------------------------------------------------------------------------

/// See `wst_check_request` in the contract header.
///
/// `out->protocol` and `out->key` point into the caller's header strings
/// (or static storage): they live as long as those.
///
/// # Safety
/// Every non-NULL pointer (in `method`, `headers` and the strings of its
/// `n_headers` elements, `worker_upgrade`) must be valid for reads of its
/// length; `out` must be valid for writing one `wst_request_check`.
#[no_mangle]
pub unsafe extern "C" fn wst_check_request(
    method: wst_str,
    proto_num: c_int,
    headers: *const wst_header,
    n_headers: usize,
    worker_upgrade: wst_str,
    out: *mut wst_request_check,
) -> wst_status {
    if !usable(out) {
        return wst_status::WST_ERR_ARG;
    }
    // SAFETY: the caller guarantees the strings and the header array.
    let (Some(method), Some(hs), Some(worker)) = (
        unsafe { str_arg(method) },
        unsafe { header_array(headers, n_headers) },
        unsafe { str_arg(worker_upgrade) },
    ) else {
        return wst_status::WST_ERR_ARG;
    };
    // SAFETY: hs was checked by header_array, over memory the caller vouches for.
    let c = handshake::check_request(method, proto_num, unsafe { headers_iter(hs) }, worker);
    let verdict = match c.verdict {
        Verdict::Ok => wst_upgrade_verdict::WST_UPGRADE_OK,
        Verdict::None => wst_upgrade_verdict::WST_UPGRADE_NONE,
        Verdict::Mismatch => wst_upgrade_verdict::WST_UPGRADE_MISMATCH,
        Verdict::BadRequest => wst_upgrade_verdict::WST_UPGRADE_BAD_REQUEST,
    };
    let result = wst_request_check {
        verdict,
        protocol: out_str(c.protocol),
        is_websocket: c_int::from(c.is_websocket),
        key: out_str(c.key),
        reason: c.reason.as_ptr(),
    };
    // SAFETY: out is non-NULL, aligned, and valid for writes (caller);
    // write() does not read or drop the possibly uninitialised old value.
    unsafe { out.write(result) };
    wst_status::WST_OK
}

/// A `wst_backend_request` viewed as the safe request, or None if one of
/// its pairs is invalid.
///
/// # Safety
/// `req` is non-NULL, aligned and valid for reads, and everything it points
/// to is valid for `'a` (see [`wst_build_request`]).
unsafe fn backend_request<'a>(
    req: *const wst_backend_request,
) -> Option<BackendRequest<'a, impl Iterator<Item = Header<'a>> + Clone>> {
    // SAFETY: guaranteed by the caller.
    let r = unsafe { &*req };
    // SAFETY: the strings are valid for 'a (caller).
    let view = |x: wst_str| unsafe { str_arg(x) };
    // SAFETY: the header array and its strings are valid for 'a (caller).
    let hs = unsafe { header_array(r.headers, r.n_headers) }?;
    Some(BackendRequest {
        method: view(r.method)?,
        path: view(r.path)?,
        host: view(r.host)?,
        // SAFETY: hs was checked by header_array.
        headers: unsafe { headers_iter(hs) },
        protocol: view(r.protocol)?,
        add_forwarded: r.add_forwarded != 0,
        forwarded_for: view(r.forwarded_for)?,
        forwarded_host: view(r.forwarded_host)?,
        forwarded_server: view(r.forwarded_server)?,
    })
}

/// See `wst_request_size` in the contract header. Returns 0 when `req` is
/// NULL or holds an invalid pointer pair (wst_build_request then fails with
/// WST_ERR_ARG whatever the buffer).
///
/// # Safety
/// As [`wst_build_request`].
#[no_mangle]
pub unsafe extern "C" fn wst_request_size(req: *const wst_backend_request) -> usize {
    if !usable(req) {
        return 0;
    }
    // SAFETY: req is usable; the caller guarantees what it points to.
    match unsafe { backend_request(req) } {
        Some(r) => handshake::request_size(&r),
        None => 0,
    }
}

/// See `wst_build_request` in the contract header.
///
/// # Safety
/// `req` must be valid for reads, with every non-NULL pointer in it valid
/// for reads of its length (the header array: `n_headers` elements); `buf`
/// must be valid for writes of `cap` bytes (it need not be initialised) and
/// must not overlap the request's strings; `written` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn wst_build_request(
    req: *const wst_backend_request,
    buf: *mut c_uchar,
    cap: usize,
    written: *mut usize,
) -> wst_status {
    if !usable(req) || !usable(written) || (buf.is_null() && cap != 0) || cap > isize::MAX as usize
    {
        return wst_status::WST_ERR_ARG;
    }
    // SAFETY: req is usable; the caller guarantees what it points to.
    let Some(r) = (unsafe { backend_request(req) }) else {
        return wst_status::WST_ERR_ARG;
    };
    let out: &mut [MaybeUninit<u8>] = if cap == 0 {
        &mut []
    } else {
        // SAFETY: buf is non-NULL, valid for writes of cap <= isize::MAX
        // bytes and does not overlap the inputs (caller); MaybeUninit<u8>
        // needs neither alignment nor initialised memory.
        unsafe { slice::from_raw_parts_mut(buf.cast::<MaybeUninit<u8>>(), cap) }
    };
    match handshake::build_request(&r, out) {
        Ok(n) => {
            // SAFETY: written is usable and valid for a write (caller).
            unsafe { written.write(n) };
            wst_status::WST_OK
        }
        Err(BuildError::Invalid) => wst_status::WST_ERR_INVALID,
        Err(BuildError::Space) => wst_status::WST_ERR_SPACE,
    }
}

/// See `wst_parse_response` in the contract header.
///
/// `out->reason` and `out->headers` point into `buf`; `out->why` is static.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes; `check` valid for reads,
/// with its `protocol` and `key` valid for reads of their lengths; `out`
/// valid for writing one `wst_response`, with its `headers` and
/// `headers_cap` set (a NULL `headers` only with `headers_cap` 0), the
/// slots valid for writes.
#[no_mangle]
pub unsafe extern "C" fn wst_parse_response(
    buf: *const c_uchar,
    len: usize,
    check: *const wst_request_check,
    head_request: c_int,
    out: *mut wst_response,
) -> wst_status {
    if !usable(check) || !usable(out) {
        return wst_status::WST_ERR_ARG;
    }
    // SAFETY: check is usable and valid for reads (caller).
    let check = unsafe { &*check };
    // SAFETY: buf and check's strings are valid for reads (caller).
    let (Some(data), Some(protocol), Some(key)) = (
        unsafe { bytes(buf, len) },
        unsafe { str_arg(check.protocol) },
        unsafe { str_arg(check.key) },
    ) else {
        return wst_status::WST_ERR_ARG;
    };
    let expect = Expect {
        protocol,
        is_websocket: check.is_websocket != 0,
        key,
    };
    let head = head_request != 0;
    // A 101 has a handful of header fields: parse with room for a few dozen
    // first, and only a head with more takes the full-size storage (3 KiB of
    // stack, which would stay resident in every thread that runs a tunnel).
    // SAFETY: out is usable and valid for writes (caller).
    match unsafe { parse_into::<SMALL_RESPONSE_HEADERS>(data, &expect, head, out) } {
        Some(st) => st,
        // SAFETY: as above.
        None => unsafe { parse_into::<MAX_RESPONSE_HEADERS>(data, &expect, head, out) }
            .unwrap_or(wst_status::WST_ERR_ARG),
    }
}

/// Header fields the first parse of a response head has room for.
const SMALL_RESPONSE_HEADERS: usize = 24;

/// Parse with room for `N` header fields and fill `*out`; None when the head
/// has more fields than that and `N` is below the limit (parse again with
/// more room).
///
/// # Safety
/// `out` must be valid for writing one `wst_response`.
#[inline(never)]
unsafe fn parse_into<const N: usize>(
    data: &[u8],
    expect: &Expect<'_>,
    head: bool,
    out: *mut wst_response,
) -> Option<wst_status> {
    let mut storage = [httparse::EMPTY_HEADER; N];
    let Some(r) = handshake::parse_response(data, expect, head, &mut storage) else {
        return Some(wst_status::WST_PARTIAL);
    };
    if N < MAX_RESPONSE_HEADERS && r.kind == ResponseKind::Invalid && r.why == Why::TooManyHeaders {
        return None;
    }
    // SAFETY: out is usable; the caller set headers and headers_cap
    // (contract), plain values read without a reference to the rest.
    let (slots, cap) = unsafe { (ptr::addr_of!((*out).headers).read(), ptr::addr_of!((*out).headers_cap).read()) };
    let n = r.headers.len();
    if n > cap {
        // SAFETY: out is usable and valid for writes (caller).
        unsafe { ptr::addr_of_mut!((*out).n_headers).write(n) };
        return Some(wst_status::WST_ERR_SPACE);
    }
    if n > 0 && (slots.is_null() || !slots.is_aligned()) {
        return Some(wst_status::WST_ERR_ARG);
    }
    let (body_mode, content_length) = match r.body {
        BodyMode::None => (wst_body_mode::WST_BODY_NONE, 0),
        BodyMode::Length(n) => (wst_body_mode::WST_BODY_LENGTH, n),
        BodyMode::Chunked => (wst_body_mode::WST_BODY_CHUNKED, 0),
        BodyMode::Close => (wst_body_mode::WST_BODY_CLOSE, 0),
    };
    // Field by field into *out, the headers straight into the caller's
    // slots: nothing is built on the stack and copied, so the stack this
    // call touches (it stays resident in the thread that then runs the
    // tunnel for hours) is httparse's storage alone. Slots past n_headers
    // are left as they were (the C side reads n_headers).
    // SAFETY: out is usable and valid for writes (caller); every place
    // written is a field of *out (addr_of_mut!: no reference to memory that
    // may be uninitialised) or one of the n <= headers_cap slots the caller
    // provides at the non-NULL, aligned `slots` (checked above), each
    // written whole by write().
    unsafe {
        let o = out;
        ptr::addr_of_mut!((*o).kind).write(match r.kind {
            ResponseKind::Tunnel => wst_response_kind::WST_RESP_TUNNEL,
            ResponseKind::BadUpgrade => wst_response_kind::WST_RESP_BAD_UPGRADE,
            ResponseKind::Other => wst_response_kind::WST_RESP_OTHER,
            ResponseKind::Invalid => wst_response_kind::WST_RESP_INVALID,
        });
        ptr::addr_of_mut!((*o).status).write(c_int::from(r.status));
        ptr::addr_of_mut!((*o).minor_version).write(c_int::from(r.minor_version));
        ptr::addr_of_mut!((*o).header_len).write(r.header_len);
        ptr::addr_of_mut!((*o).reason).write(out_str(r.reason));
        for (i, src) in r.headers.iter().enumerate() {
            slots.add(i).write(wst_header {
                name: out_str(src.name.as_bytes()),
                value: out_str(src.value),
            });
        }
        ptr::addr_of_mut!((*o).n_headers).write(n);
        ptr::addr_of_mut!((*o).body_mode).write(body_mode);
        ptr::addr_of_mut!((*o).content_length).write(content_length);
        ptr::addr_of_mut!((*o).why).write(r.why.text().as_ptr());
    }
    Some(wst_status::WST_OK)
}

/// See `wst_response_hop_by_hop` in the contract header.
///
/// # Safety
/// A non-NULL `resp` must point to a `wst_response` that
/// [`wst_parse_response`] filled (WST_OK), whose buffer is still alive.
#[no_mangle]
pub unsafe extern "C" fn wst_response_hop_by_hop(resp: *const wst_response, index: usize) -> c_int {
    if !usable(resp) {
        return 0;
    }
    // SAFETY: resp is non-NULL, aligned and, per the contract, a filled
    // wst_response.
    let r = unsafe { &*resp };
    let n = r.n_headers.min(r.headers_cap);
    // SAFETY: the first n_headers slots were written by wst_parse_response
    // and point into the caller's live buffer (contract).
    let Some(hs) = (unsafe { header_array(r.headers, n) }) else {
        return 0;
    };
    let Some(h) = hs.get(index) else {
        return 0;
    };
    // SAFETY: h and hs come from the checked array above.
    let (name, all) = unsafe { (header_view(h).name, headers_iter(hs)) };
    c_int::from(handshake::response_hop_by_hop(all, name))
}

/// See `wst_chunked_decode` in the contract header.
///
/// `*st` is updated on every call that gets past the argument checks: on
/// WST_ERR_INVALID it is left failed (later calls fail too), and `buf` may
/// have been partly rewritten. An `st->state` this decoder never produces
/// gives WST_ERR_ARG.
///
/// # Safety
/// `st` must be valid for reads and writes of one initialised
/// `wst_chunked`; `buf` valid for reads and writes of `len` bytes;
/// `data_len` and `consumed` valid for a write each.
#[no_mangle]
pub unsafe extern "C" fn wst_chunked_decode(
    st: *mut wst_chunked,
    buf: *mut c_uchar,
    len: usize,
    data_len: *mut usize,
    consumed: *mut usize,
) -> wst_status {
    if !usable(st)
        || !usable(data_len)
        || !usable(consumed)
        || (buf.is_null() && len != 0)
        || len > isize::MAX as usize
    {
        return wst_status::WST_ERR_ARG;
    }
    let data: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: buf is non-NULL and valid for reads and writes of
        // len <= isize::MAX initialised bytes (caller); u8 needs no alignment.
        unsafe { slice::from_raw_parts_mut(buf, len) }
    };
    // SAFETY: st is usable and points to an initialised wst_chunked (caller).
    let s = unsafe { st.read() };
    let mut dec = ChunkedDecoder {
        remaining: s.remaining,
        state: s.state,
        line_len: s.line_len,
    };
    let result = dec.decode(data);
    if result != Err(ChunkedError::BadState) {
        // SAFETY: st is usable and valid for writes (caller).
        unsafe {
            st.write(wst_chunked {
                remaining: dec.remaining,
                state: dec.state,
                line_len: dec.line_len,
            })
        };
    }
    match result {
        Ok(d) => {
            // SAFETY: data_len is usable and valid for a write (caller).
            unsafe { data_len.write(d.data_len) };
            // SAFETY: consumed is usable and valid for a write (caller).
            unsafe { consumed.write(d.consumed) };
            if d.done {
                wst_status::WST_DONE
            } else {
                wst_status::WST_OK
            }
        }
        Err(ChunkedError::Invalid) => wst_status::WST_ERR_INVALID,
        Err(ChunkedError::BadState) => wst_status::WST_ERR_ARG,
    }
}

/// See `wst_chunked_failure` in the contract header.
///
/// # Safety
/// A non-NULL `st` must be valid for reads of one initialised `wst_chunked`.
#[no_mangle]
pub unsafe extern "C" fn wst_chunked_failure(st: *const wst_chunked) -> *const c_char {
    if !usable(st) {
        return ptr::null();
    }
    // SAFETY: st is usable and points to an initialised wst_chunked (caller).
    let s = unsafe { st.read() };
    let dec = ChunkedDecoder {
        remaining: s.remaining,
        state: s.state,
        line_len: s.line_len,
    };
    dec.failure().map_or(ptr::null(), |f| f.reason().as_ptr())
}

/// See `wst_status_name` in the contract header.
#[no_mangle]
pub extern "C" fn wst_status_name(status: wst_status) -> *const c_char {
    match status {
        wst_status::WST_OK => c"ok",
        wst_status::WST_PARTIAL => c"partial",
        wst_status::WST_ERR_ARG => c"bad argument",
        wst_status::WST_ERR_SPACE => c"no space",
        wst_status::WST_ERR_INVALID => c"invalid",
        wst_status::WST_DONE => c"done",
        _ => c"unknown",
    }
    .as_ptr()
}

exports_match_contract! {
    wst_status_name: unsafe extern "C" fn(wst_status) -> *const c_char;
    wst_check_request: unsafe extern "C" fn(
        wst_str,
        c_int,
        *const wst_header,
        usize,
        wst_str,
        *mut wst_request_check,
    ) -> wst_status;
    wst_request_size: unsafe extern "C" fn(*const wst_backend_request) -> usize;
    wst_build_request: unsafe extern "C" fn(
        *const wst_backend_request,
        *mut c_uchar,
        usize,
        *mut usize,
    ) -> wst_status;
    wst_parse_response: unsafe extern "C" fn(
        *const c_uchar,
        usize,
        *const wst_request_check,
        c_int,
        *mut wst_response,
    ) -> wst_status;
    wst_response_hop_by_hop: unsafe extern "C" fn(*const wst_response, usize) -> c_int;
    wst_chunked_decode: unsafe extern "C" fn(
        *mut wst_chunked,
        *mut c_uchar,
        usize,
        *mut usize,
        *mut usize,
    ) -> wst_status;
    wst_chunked_failure: unsafe extern "C" fn(*const wst_chunked) -> *const c_char;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr::{null, null_mut};

    fn s(v: &[u8]) -> wst_str {
        wst_str {
            ptr: v.as_ptr().cast(),
            len: v.len(),
        }
    }

    fn h(n: &'static str, v: &'static str) -> wst_header {
        wst_header {
            name: s(n.as_bytes()),
            value: s(v.as_bytes()),
        }
    }

    fn as_bytes<'a>(x: wst_str) -> &'a [u8] {
        assert!(!x.ptr.is_null());
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe { slice::from_raw_parts(x.ptr.cast::<u8>(), x.len) }
    }

    fn cstr(p: *const c_char) -> &'static str {
        assert!(!p.is_null());
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap()
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn chrome() -> Vec<wst_header> {
        vec![
            h("Host", "example.com"),
            h("Connection", "Upgrade"),
            h("Upgrade", "websocket"),
            h("Origin", "https://example.com"),
            h("Sec-WebSocket-Version", "13"),
            h("Sec-WebSocket-Key", KEY),
            h("Proxy-Authorization", "secret"),
        ]
    }

    #[test]
    fn check_request_ffi() {
        let hs = chrome();
        let mut out = wst_request_check::default();
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe {
            wst_check_request(
                s(b"GET"),
                1001,
                hs.as_ptr(),
                hs.len(),
                wst_str {
                    ptr: null(),
                    len: 0,
                },
                &mut out,
            )
        };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.verdict, wst_upgrade_verdict::WST_UPGRADE_OK);
        assert_eq!(out.is_websocket, 1);
        assert_eq!(as_bytes(out.protocol), b"websocket");
        assert_eq!(out.key.ptr, hs[5].value.ptr);
        assert_eq!(cstr(out.reason), "upgrade accepted");

        let mut out = wst_request_check::default();
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_check_request(s(b"GET"), 1001, null(), 0, s(b""), &mut out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.verdict, wst_upgrade_verdict::WST_UPGRADE_NONE);
        assert_eq!(out.protocol.len, 0);
        assert!(!out.protocol.ptr.is_null() && !out.key.ptr.is_null());
        assert_eq!(cstr(out.reason), "no Upgrade header");

        let hs: Vec<wst_header> = chrome().into_iter().filter(|x| x.name.len != 17).collect();
        let mut out = wst_request_check::default();
        // SAFETY: pointers to live test locals with matching lengths.
        let st =
            unsafe { wst_check_request(s(b"GET"), 1001, hs.as_ptr(), hs.len(), s(b""), &mut out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.verdict, wst_upgrade_verdict::WST_UPGRADE_BAD_REQUEST);
        assert_eq!(cstr(out.reason), "missing Sec-WebSocket-Key");
    }

    #[test]
    fn check_request_bad_args() {
        let hs = chrome();
        let sentinel = wst_request_check {
            is_websocket: 77,
            ..Default::default()
        };
        let mut out = sentinel;
        let bad_str = wst_str {
            ptr: null(),
            len: 3,
        };
        let mut bad_hs = chrome();
        bad_hs[3].value = bad_str;
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe {
            assert_eq!(
                wst_check_request(s(b"GET"), 1001, hs.as_ptr(), hs.len(), s(b""), null_mut()),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_check_request(bad_str, 1001, hs.as_ptr(), hs.len(), s(b""), &mut out),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_check_request(s(b"GET"), 1001, null(), 2, s(b""), &mut out),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_check_request(s(b"GET"), 1001, hs.as_ptr(), hs.len(), bad_str, &mut out),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_check_request(
                    s(b"GET"),
                    1001,
                    bad_hs.as_ptr(),
                    bad_hs.len(),
                    s(b""),
                    &mut out
                ),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_check_request(
                    s(b"GET"),
                    1001,
                    hs.as_ptr(),
                    usize::MAX / 2,
                    s(b""),
                    &mut out
                ),
                wst_status::WST_ERR_ARG
            );
        }
        assert_eq!(out.is_websocket, 77, "nothing written on error");
    }

    fn backend_req(hs: &[wst_header]) -> wst_backend_request {
        wst_backend_request {
            method: s(b"GET"),
            path: s(b"/ws"),
            host: s(b"b:80"),
            headers: hs.as_ptr(),
            n_headers: hs.len(),
            protocol: s(b"websocket"),
            add_forwarded: 1,
            forwarded_for: s(b"192.0.2.1"),
            forwarded_host: s(b"example.com"),
            forwarded_server: s(b"proxy"),
        }
    }

    #[test]
    fn build_request_ffi() {
        let hs = chrome();
        let req = backend_req(&hs);
        // SAFETY: pointers to live test locals with matching lengths.
        let size = unsafe { wst_request_size(&req) };
        let mut buf = vec![0u8; size];
        let mut written = 0usize;
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_build_request(&req, buf.as_mut_ptr(), buf.len(), &mut written) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(written, size);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "GET /ws HTTP/1.1\r\nHost: b:80\r\nOrigin: https://example.com\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 192.0.2.1\r\n\
             X-Forwarded-Host: example.com\r\nX-Forwarded-Server: proxy\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        // Too small, invalid, bad arguments: nothing written.
        let mut written = 12345usize;
        let mut small = vec![0u8; size - 1];
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe {
            assert_eq!(
                wst_build_request(&req, small.as_mut_ptr(), small.len(), &mut written),
                wst_status::WST_ERR_SPACE
            );
            assert_eq!(
                wst_build_request(&req, null_mut(), 0, &mut written),
                wst_status::WST_ERR_SPACE
            );
            assert_eq!(
                wst_build_request(&req, null_mut(), 10, &mut written),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_build_request(null(), buf.as_mut_ptr(), buf.len(), &mut written),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_build_request(&req, buf.as_mut_ptr(), buf.len(), null_mut()),
                wst_status::WST_ERR_ARG
            );
            let mut evil = req;
            evil.path = s(b"/ws HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /");
            assert_eq!(
                wst_build_request(&evil, buf.as_mut_ptr(), buf.len(), &mut written),
                wst_status::WST_ERR_INVALID
            );
            let mut bad = req;
            bad.headers = null();
            assert_eq!(wst_request_size(&bad), 0);
            assert_eq!(
                wst_build_request(&bad, buf.as_mut_ptr(), buf.len(), &mut written),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(wst_request_size(null()), 0);
        }
        assert!(small.iter().all(|&b| b == 0));
        assert_eq!(written, 12345);
    }

    /// The header slots wst_parse_response filled.
    fn filled(out: &wst_response) -> &[wst_header] {
        // SAFETY: the tests point headers at a live Vec of headers_cap
        // slots, of which wst_parse_response filled n_headers.
        unsafe { slice::from_raw_parts(out.headers, out.n_headers.min(out.headers_cap)) }
    }

    #[test]
    fn response_hop_by_hop_ffi() {
        let hs = chrome();
        let mut check = wst_request_check::default();
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe { wst_check_request(s(b"GET"), 1001, hs.as_ptr(), hs.len(), s(b""), &mut check) };
        let resp = b"HTTP/1.1 403 Forbidden\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\
            Keep-Alive: timeout=5\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n";
        let mut slots = vec![wst_header::default(); MAX_RESPONSE_HEADERS];
        let mut out: Box<wst_response> = Box::default();
        out.headers = slots.as_mut_ptr();
        out.headers_cap = slots.len();
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, &mut *out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.n_headers, 5);
        // SAFETY: out was filled by wst_parse_response; resp is alive.
        let hop: Vec<c_int> = (0..7).map(|i| unsafe { wst_response_hop_by_hop(&*out, i) }).collect();
        assert_eq!(hop, [1, 1, 1, 0, 0, 0, 0], "Connection, X-Secret, Keep-Alive; then kept; past the end");
        // SAFETY: NULL is refused.
        assert_eq!(unsafe { wst_response_hop_by_hop(null(), 0) }, 0);
    }

    #[test]
    fn parse_response_ffi() {
        let hs = chrome();
        let mut check = wst_request_check::default();
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe { wst_check_request(s(b"GET"), 1001, hs.as_ptr(), hs.len(), s(b""), &mut check) };
        let resp =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let mut slots = vec![wst_header::default(); MAX_RESPONSE_HEADERS];
        let mut out: Box<wst_response> = Box::default();
        out.headers = slots.as_mut_ptr();
        out.headers_cap = slots.len();
        out.status = -7;
        for cut in 0..resp.len() - 2 {
            // SAFETY: pointers to live test locals with matching lengths.
            let st = unsafe { wst_parse_response(resp.as_ptr(), cut, &check, 0, &mut *out) };
            assert_eq!(st, wst_status::WST_PARTIAL, "cut {cut}");
            assert_eq!(out.status, -7, "nothing written while partial");
        }
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, &mut *out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.kind, wst_response_kind::WST_RESP_TUNNEL);
        assert_eq!(out.status, 101);
        assert_eq!(out.minor_version, 1);
        assert_eq!(out.header_len, resp.len() - 2);
        assert_eq!(as_bytes(out.reason), b"Switching Protocols");
        assert_eq!(out.n_headers, 3);
        assert_eq!(as_bytes(filled(&out)[0].name), b"Upgrade");
        assert_eq!(
            as_bytes(filled(&out)[2].value),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            filled(&out)[2].value.ptr,
            resp[resp.len() - 34..].as_ptr().cast()
        );
        assert_eq!(out.body_mode, wst_body_mode::WST_BODY_NONE);
        assert!(!out.why.is_null());

        // Too few slots: WST_ERR_SPACE says how many; with them, the same.
        let mut few = vec![wst_header::default(); 2];
        let mut small: Box<wst_response> = Box::default();
        small.headers = few.as_mut_ptr();
        small.headers_cap = few.len();
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, &mut *small) };
        assert_eq!((st, small.n_headers), (wst_status::WST_ERR_SPACE, 3));
        let mut enough = vec![wst_header::default(); small.n_headers];
        small.headers = enough.as_mut_ptr();
        small.headers_cap = enough.len();
        // SAFETY: as above.
        let st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, &mut *small) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(as_bytes(filled(&small)[2].name), b"Sec-WebSocket-Accept");
        // No slots at all (NULL) is fine until a field needs one.
        small.headers = core::ptr::null_mut();
        small.headers_cap = 0;
        // SAFETY: as above.
        let st = unsafe { wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, &mut *small) };
        assert_eq!(st, wst_status::WST_ERR_SPACE);

        let other = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden";
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_parse_response(other.as_ptr(), other.len(), &check, 0, &mut *out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(
            (out.kind, out.status, out.header_len),
            (wst_response_kind::WST_RESP_OTHER, 403, other.len() - 9)
        );
        assert_eq!(
            (out.body_mode, out.content_length),
            (wst_body_mode::WST_BODY_LENGTH, 9)
        );

        let bad = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        // SAFETY: pointers to live test locals with matching lengths.
        let st = unsafe { wst_parse_response(bad.as_ptr(), bad.len(), &check, 0, &mut *out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.kind, wst_response_kind::WST_RESP_BAD_UPGRADE);
        assert_eq!(cstr(out.why), "101 without a Sec-WebSocket-Accept");

        // More header fields than the first parse has room for: parsed
        // again with the full storage, all of them reported; past the limit,
        // invalid.
        for (n, kind) in [
            (SMALL_RESPONSE_HEADERS, wst_response_kind::WST_RESP_OTHER),
            (SMALL_RESPONSE_HEADERS + 1, wst_response_kind::WST_RESP_OTHER),
            (MAX_RESPONSE_HEADERS, wst_response_kind::WST_RESP_OTHER),
            (MAX_RESPONSE_HEADERS + 1, wst_response_kind::WST_RESP_INVALID),
        ] {
            let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                many.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
            }
            many.extend_from_slice(b"\r\n");
            // SAFETY: pointers to live test locals with matching lengths.
            let st = unsafe { wst_parse_response(many.as_ptr(), many.len(), &check, 0, &mut *out) };
            assert_eq!(st, wst_status::WST_OK, "{n} fields");
            assert_eq!(out.kind, kind, "{n} fields");
            if kind == wst_response_kind::WST_RESP_OTHER {
                assert_eq!(out.n_headers, n);
                let last = format!("X-Field-{}", n - 1);
                assert_eq!(as_bytes(filled(&out)[n - 1].name), last.as_bytes());
            } else {
                assert_eq!(cstr(out.why), "too many response header fields");
            }
        }

        let garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        // SAFETY: pointers to live test locals with matching lengths.
        let st =
            unsafe { wst_parse_response(garbage.as_ptr(), garbage.len(), &check, 0, &mut *out) };
        assert_eq!(st, wst_status::WST_OK);
        assert_eq!(out.kind, wst_response_kind::WST_RESP_INVALID);
        assert_eq!(out.n_headers, 0);
        assert_eq!(cstr(out.why), "malformed response head");

        // SAFETY: pointers to live test locals with matching lengths.
        unsafe {
            assert_eq!(
                wst_parse_response(null(), 0, &check, 0, &mut *out),
                wst_status::WST_PARTIAL
            );
            assert_eq!(
                wst_parse_response(null(), 5, &check, 0, &mut *out),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_parse_response(resp.as_ptr(), resp.len(), null(), 0, &mut *out),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_parse_response(resp.as_ptr(), resp.len(), &check, 0, null_mut()),
                wst_status::WST_ERR_ARG
            );
            let mut broken = check;
            broken.key = wst_str {
                ptr: null(),
                len: 24,
            };
            assert_eq!(
                wst_parse_response(resp.as_ptr(), resp.len(), &broken, 0, &mut *out),
                wst_status::WST_ERR_ARG
            );
        }
    }

    #[test]
    fn chunked_failure_ffi() {
        let name = |st: &wst_chunked| {
            // SAFETY: a live, initialised wst_chunked.
            let p = unsafe { wst_chunked_failure(st) };
            // SAFETY: a non-NULL result is a static C string.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string())
        };
        // SAFETY: NULL is refused.
        assert!(unsafe { wst_chunked_failure(null()) }.is_null());
        for (input, want) in [
            (&b"5\r\nhe"[..], None),
            (b"zz", Some("a chunk-size line, CRLF")),
            (b"10000000000000000\r\n", Some("a chunk size larger than 64 bits")),
        ] {
            let mut st = wst_chunked::default();
            let mut buf = input.to_vec();
            let (mut data_len, mut consumed) = (0usize, 0usize);
            // SAFETY: live buffers of matching lengths.
            let rc = unsafe {
                wst_chunked_decode(
                    &mut st,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut data_len,
                    &mut consumed,
                )
            };
            assert_eq!(rc == wst_status::WST_ERR_INVALID, want.is_some());
            let got = name(&st);
            assert_eq!(got.is_some(), want.is_some(), "{input:?}");
            if let (Some(g), Some(w)) = (got, want) {
                assert!(g.starts_with(w), "{g}");
            }
        }
    }

    #[test]
    fn chunked_ffi() {
        let input = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\nrest";
        // Whole.
        let mut st = wst_chunked::default();
        let mut buf = input.to_vec();
        let (mut data_len, mut consumed) = (0usize, 0usize);
        // SAFETY: pointers to live test locals with matching lengths.
        let r = unsafe {
            wst_chunked_decode(
                &mut st,
                buf.as_mut_ptr(),
                buf.len(),
                &mut data_len,
                &mut consumed,
            )
        };
        assert_eq!(r, wst_status::WST_DONE);
        assert_eq!(&buf[..data_len], b"Wikipedia");
        assert_eq!(&input[consumed..], b"rest");
        // Split at every offset.
        for cut in 0..input.len() {
            let mut st = wst_chunked::default();
            let mut body = Vec::new();
            let mut a = input[..cut].to_vec();
            // SAFETY: pointers to live test locals with matching lengths.
            let r = unsafe {
                wst_chunked_decode(
                    &mut st,
                    a.as_mut_ptr(),
                    a.len(),
                    &mut data_len,
                    &mut consumed,
                )
            };
            let mut total = consumed;
            body.extend_from_slice(&a[..data_len]);
            if r == wst_status::WST_OK {
                assert_eq!(consumed, cut);
                let mut b = input[cut..].to_vec();
                // SAFETY: pointers to live test locals with matching lengths.
                let r = unsafe {
                    wst_chunked_decode(
                        &mut st,
                        b.as_mut_ptr(),
                        b.len(),
                        &mut data_len,
                        &mut consumed,
                    )
                };
                assert_eq!(r, wst_status::WST_DONE);
                body.extend_from_slice(&b[..data_len]);
                total += consumed;
            } else {
                assert_eq!(r, wst_status::WST_DONE);
            }
            assert_eq!(body, b"Wikipedia", "cut {cut}");
            assert_eq!(total, input.len() - 4);
        }
        // Errors and arguments.
        let mut st = wst_chunked::default();
        let mut bad = b"zz\r\n".to_vec();
        data_len = 99;
        // SAFETY: pointers to live test locals with matching lengths.
        unsafe {
            assert_eq!(
                wst_chunked_decode(
                    &mut st,
                    bad.as_mut_ptr(),
                    bad.len(),
                    &mut data_len,
                    &mut consumed
                ),
                wst_status::WST_ERR_INVALID
            );
            assert_eq!(data_len, 99);
            assert_eq!(
                wst_chunked_decode(&mut st, null_mut(), 0, &mut data_len, &mut consumed),
                wst_status::WST_ERR_INVALID
            );
            let mut fresh = wst_chunked::default();
            assert_eq!(
                wst_chunked_decode(&mut fresh, null_mut(), 0, &mut data_len, &mut consumed),
                wst_status::WST_OK
            );
            assert_eq!((data_len, consumed), (0, 0));
            assert_eq!(
                wst_chunked_decode(&mut fresh, null_mut(), 3, &mut data_len, &mut consumed),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_chunked_decode(
                    null_mut(),
                    bad.as_mut_ptr(),
                    1,
                    &mut data_len,
                    &mut consumed
                ),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_chunked_decode(&mut fresh, bad.as_mut_ptr(), 1, null_mut(), &mut consumed),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(
                wst_chunked_decode(&mut fresh, bad.as_mut_ptr(), 1, &mut data_len, null_mut()),
                wst_status::WST_ERR_ARG
            );
            let mut corrupt = wst_chunked {
                remaining: 0,
                state: 1000,
                line_len: 0,
            };
            assert_eq!(
                wst_chunked_decode(
                    &mut corrupt,
                    bad.as_mut_ptr(),
                    1,
                    &mut data_len,
                    &mut consumed
                ),
                wst_status::WST_ERR_ARG
            );
            assert_eq!(corrupt.state, 1000);
        }
    }

    #[test]
    fn status_names() {
        let name = |st| {
            // SAFETY: the export returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(super::wst_status_name(st)) }.to_str().unwrap()
        };
        assert_eq!(name(wst_status::WST_OK), "ok");
        assert_eq!(name(wst_status::WST_ERR_INVALID), "invalid");
        assert_eq!(name(wst_status(42)), "unknown");
    }
}
