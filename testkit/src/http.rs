//! A one-request HTTP/1.1 client for the server's probe endpoints (`/health`,
//! `/ready`, `/metrics`): `Connection: close`, the whole response read, its
//! Content-Length checked.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub body: String,
    /// From the connect to the end of the response.
    pub took: Duration,
}

/// One `GET path` on 127.0.0.1:`port` (connect within 2 s, each read within 3 s):
/// (status, body), or why there was no answer. A Content-Length, if sent, must match.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write {addr}{path}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read {addr}{path}: {e}"))?;
    let (status, body) = split(&raw, &format!("{addr}{path}"), false)?;
    Ok((status, body))
}

/// `GET path` on 127.0.0.1:`port` (or the raw `request` when not empty), all of it
/// (connect, write, read to the end) within `limit`; the response must be complete
/// (a Content-Length, and the body it announces).
pub fn request(port: u16, path: &str, limit: Duration, request: &[u8]) -> Result<Got, String> {
    let t = Instant::now();
    let left = |t: Instant| {
        limit
            .checked_sub(t.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{path}: no complete answer within {limit:?}"))
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    c.set_write_timeout(Some(left(t)?)).unwrap();
    let req;
    let request = if request.is_empty() {
        req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        req.as_bytes()
    } else {
        request
    };
    c.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        c.set_read_timeout(Some(left(t)?)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(format!(
                    "{path}: no complete answer within {limit:?} ({} bytes)",
                    raw.len()
                ));
            }
            Err(e) => return Err(format!("{path}: read: {e} after {} bytes", raw.len())),
        }
    }
    let took = t.elapsed();
    let (status, body) = split(&raw, path, true)?;
    Ok(Got { status, body, took })
}

/// The first 200 characters of `s` (for messages).
pub fn trim(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// (status, body) of a whole response; `need_length`: a Content-Length is required.
fn split(raw: &[u8], what: &str, need_length: bool) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: no end of head in {} bytes: {:?}", raw.len(), trim(&text)))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    let len = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
    });
    match len {
        Some(len) if len.parse::<usize>().ok() != Some(body.len()) => {
            return Err(format!("{what}: content-length {len}, body {} bytes", body.len()));
        }
        None if need_length => return Err(format!("{what}: no content-length in {head:?}")),
        _ => {}
    }
    Ok((status, body.to_string()))
}
