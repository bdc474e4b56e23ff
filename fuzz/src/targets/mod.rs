//! One module per fuzz target; each `run(data)` decodes the input, drives
//! the core, and panics when an invariant breaks.

pub mod build_request;
pub mod check_request;
pub mod chunked;
pub mod frames;
pub mod handshake_ffi;
pub mod parse_response;
pub mod tunnel;
