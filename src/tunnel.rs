//! The poll-based bidirectional relay (to be written).
