//! What /proc says about httpd's processes: resident memory, open descriptors, and the TCP
//! states of the sockets they hold (no `ss` needed).

use std::collections::HashMap;
use std::fs;

/// `VmRSS` of `pid` in KiB (None if the process is gone).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Sum of `VmRSS` over `pids`, in KiB (processes that are gone count 0).
pub fn total_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| vm_rss_kib(*p)).sum()
}

/// Number of open file descriptors of `pid` (None if the process is gone).
pub fn fd_count(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.flatten().count())
}

/// Inodes of the sockets `pid` holds open.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// TCP states as /proc/net/tcp writes them.
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_CLOSE_WAIT: u8 = 0x08;
pub const TCP_LISTEN: u8 = 0x0A;

/// One line of /proc/net/tcp{,6}.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

impl TcpSocket {
    pub fn state_name(&self) -> &'static str {
        match self.state {
            0x01 => "ESTABLISHED",
            0x02 => "SYN_SENT",
            0x03 => "SYN_RECV",
            0x04 => "FIN_WAIT1",
            0x05 => "FIN_WAIT2",
            0x06 => "TIME_WAIT",
            0x07 => "CLOSE",
            0x08 => "CLOSE_WAIT",
            0x09 => "LAST_ACK",
            0x0A => "LISTEN",
            0x0B => "CLOSING",
            _ => "?",
        }
    }
}

fn parse_port(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| u16::from_str_radix(p, 16).ok())
        .unwrap_or(0)
}

/// Every TCP socket of this network namespace, by inode.
pub fn tcp_sockets() -> HashMap<u64, TcpSocket> {
    let mut out = HashMap::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = fs::read_to_string(f) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let c: Vec<&str> = line.split_whitespace().collect();
            if c.len() < 10 {
                continue;
            }
            let Some(inode) = c[9].parse::<u64>().ok() else {
                continue;
            };
            let Ok(state) = u8::from_str_radix(c[3], 16) else {
                continue;
            };
            out.insert(
                inode,
                TcpSocket {
                    local_port: parse_port(c[1]),
                    remote_port: parse_port(c[2]),
                    state,
                    inode,
                },
            );
        }
    }
    out
}

/// The TCP sockets that the processes `pids` hold, with their state.
pub fn tcp_sockets_of(pids: &[u32]) -> Vec<(u32, TcpSocket)> {
    let all = tcp_sockets();
    let mut out = Vec::new();
    for &pid in pids {
        for ino in socket_inodes(pid) {
            if let Some(s) = all.get(&ino) {
                out.push((pid, s.clone()));
            }
        }
    }
    out
}
