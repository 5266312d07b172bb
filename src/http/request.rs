//! The request head: where it ends and what it says. Pure functions over bytes (no
//! I/O), so that the endpoint loop, the unit tests and the fuzz target `http_request`
//! call the same code.
//!
//! Lines end in CRLF or in a bare LF (RFC 9112 section 2.2 lets a recipient accept a
//! bare LF; probes written with `printf` or `nc` send them). A bare CR inside a line, a
//! folded header line and whitespace before a header's colon are rejected (RFC 9112
//! sections 2.2, 5.1, 5.2), so that the head means one thing to every reader.

/// The largest request head accepted, request line and headers together.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the handlers look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path of the target, without the query string or fragment (`*` for the
    /// asterisk form).
    pub path: &'a str,
}

impl Request<'_> {
    /// Whether the response carries its head only.
    pub fn head_only(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Why a head cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// No end of head within [`MAX_HEAD`] bytes: 431.
    TooLarge,
    /// An HTTP version other than 1.x: 505.
    Version,
    /// Not an HTTP/1.x request head: 400, with what was wrong.
    Malformed(&'static str),
}

impl HeadError {
    /// The status code it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Version => 505,
            HeadError::Malformed(_) => 400,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "request head over {MAX_HEAD} bytes"),
            HeadError::Version => f.write_str("HTTP version not supported"),
            HeadError::Malformed(why) => f.write_str(why),
        }
    }
}

/// Where the head in `buf` ends: the index just past the empty line that closes it
/// (`LF LF` or `LF CR LF`, so CRLF, bare LF and a mix of both). `searched` is how much
/// of `buf` an earlier call already looked at without finding the end (0 the first
/// time): only the bytes after it, and the two before, are looked at again, so that
/// reading a head in many small pieces costs time linear in its length.
pub fn head_end(buf: &[u8], searched: usize) -> Option<usize> {
    let from = searched.saturating_sub(2);
    let mut i = from;
    while i < buf.len() {
        let lf = i + buf[i..].iter().position(|&b| b == b'\n')?;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// What a buffer being read holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet (and fits so far).
    Partial,
    /// The request, and the length of its head in the buffer.
    Complete(Request<'a>, usize),
}

/// Looks for a complete head in `buf` (see [`head_end`] for `searched`) and parses it.
/// A head that has not ended within [`MAX_HEAD`] bytes is [`HeadError::TooLarge`].
pub fn parse(buf: &[u8], searched: usize) -> Result<Parsed<'_>, HeadError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    match head_end(window, searched.min(window.len())) {
        Some(end) => parse_head(&buf[..end]).map(|r| Parsed::Complete(r, end)),
        None if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        None => Ok(Parsed::Partial),
    }
}

/// Parses a complete head (request line, header lines, the empty line).
pub fn parse_head(head: &[u8]) -> Result<Request<'_>, HeadError> {
    if head.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // RFC 9112 section 2.2: a server should ignore empty lines before the request line.
    let line = lines
        .by_ref()
        .find(|l| !l.is_empty())
        .ok_or(HeadError::Malformed("empty request"))?;
    let request = request_line(line)?;
    for line in lines {
        if line.is_empty() {
            break;
        }
        header_line(line)?;
    }
    Ok(request)
}

/// `METHOD SP TARGET SP HTTP/1.x`.
fn request_line(line: &[u8]) -> Result<Request<'_>, HeadError> {
    let text = std::str::from_utf8(line).map_err(|_| HeadError::Malformed("request line not ASCII"))?;
    if !text.is_ascii() {
        return Err(HeadError::Malformed("request line not ASCII"));
    }
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(HeadError::Malformed("control character in the request line"));
    }
    let mut words = text.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(HeadError::Malformed("request line is not METHOD TARGET VERSION"));
    };
    if !method.bytes().all(is_tchar) {
        return Err(HeadError::Malformed("invalid method"));
    }
    // HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 section 2.3).
    match version.strip_prefix("HTTP/").map(str::as_bytes) {
        Some([b'1', b'.', minor]) if minor.is_ascii_digit() => {}
        Some([major, b'.', minor]) if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(HeadError::Version);
        }
        _ => return Err(HeadError::Malformed("invalid HTTP version")),
    }
    Ok(Request {
        method,
        path: path_of(target)?,
    })
}

/// The path of a request target: origin form (`/p?q`), absolute form
/// (`http://host/p?q`) or `*`.
fn path_of(target: &str) -> Result<&str, HeadError> {
    if target == "*" {
        return Ok(target);
    }
    let rest = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(HeadError::Malformed("invalid request target"));
        };
        match after.find(['/', '?', '#']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            _ => "/",
        }
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    Ok(&rest[..end])
}

/// `NAME: VALUE`, the name a token right before the colon.
fn header_line(line: &[u8]) -> Result<(), HeadError> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(HeadError::Malformed("folded header line"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HeadError::Malformed("header line without a colon"))?;
    if colon == 0 || !line[..colon].iter().copied().all(is_tchar) {
        return Err(HeadError::Malformed("invalid header name"));
    }
    if line[colon + 1..].iter().any(|&b| b == b'\r' || b == 0) {
        return Err(HeadError::Malformed("bare CR or NUL in a header value"));
    }
    Ok(())
}

/// A `token` character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(head: &str) -> Request<'_> {
        match parse(head.as_bytes(), 0) {
            Ok(Parsed::Complete(r, n)) => {
                assert_eq!(n, head.len(), "{head:?}");
                r
            }
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn crlf_bare_lf_and_mixed_endings() {
        for head in [
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /health HTTP/1.1\nHost: x\n\n",
            "GET /health HTTP/1.0\n\n",
            "GET /health HTTP/1.1\r\nHost: x\n\r\n",
            "GET /health HTTP/1.1\nHost: x\r\n\n",
            "\r\nGET /health HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                ok(head),
                Request {
                    method: "GET",
                    path: "/health"
                },
                "{head:?}"
            );
        }
    }

    #[test]
    fn targets() {
        assert_eq!(ok("GET /metrics?x=1#f HTTP/1.1\r\n\r\n").path, "/metrics");
        assert_eq!(ok("GET http://h:8080/ready?x HTTP/1.1\r\n\r\n").path, "/ready");
        assert_eq!(ok("GET HTTP://h:8080 HTTP/1.1\r\n\r\n").path, "/");
        assert_eq!(ok("OPTIONS * HTTP/1.1\r\n\r\n").path, "*");
        assert!(ok("HEAD / HTTP/1.1\r\n\r\n").head_only());
    }

    #[test]
    fn partial_until_the_empty_line() {
        let full = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let end = full.len() - 4;
        for n in 0..end {
            assert_eq!(parse(&full[..n], 0), Ok(Parsed::Partial), "{n}");
        }
        assert!(matches!(parse(full, 0), Ok(Parsed::Complete(_, e)) if e == end));
    }

    #[test]
    fn searching_in_pieces_finds_what_one_search_finds() {
        for head in [
            &b"GET / HTTP/1.1\r\nA: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\nA: b\n\n",
            b"GET / HTTP/1.1\n\r\n",
        ] {
            let whole = head_end(head, 0);
            for step in 1..4 {
                let mut searched = 0;
                let mut found = None;
                let mut n = 0;
                while n < head.len() && found.is_none() {
                    n = (n + step).min(head.len());
                    found = head_end(&head[..n], searched);
                    searched = n;
                }
                assert_eq!(found, whole, "{head:?} in steps of {step}");
            }
        }
    }

    #[test]
    fn oversize_head() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse(&big, 0), Err(HeadError::TooLarge));
        assert_eq!(parse(&big[..MAX_HEAD - 1], 0), Ok(Parsed::Partial));
        // One that ends just past the limit is too large too: the end is not searched
        // for beyond it.
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big, MAX_HEAD - 10), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn garbage() {
        for (head, want) in [
            (&b"\r\n\r\n"[..], 400),
            (b"GET\r\n\r\n", 400),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
            (b"GET / FTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET / HTTP/1.1x\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\n\r\n", 400),
            (b"GET health HTTP/1.1\r\n\r\n", 400),
            (b"GET /\x01 HTTP/1.1\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\0\r\n\r\n", 400),
            (b"\x00\x01\x02\n\n", 400),
        ] {
            match parse(head, 0) {
                Err(e) => assert_eq!(e.status(), want, "{head:?}: {e}"),
                other => panic!("{head:?}: {other:?}"),
            }
        }
        // Header values may hold any other byte (obs-text).
        assert_eq!(ok("GET / HTTP/1.1\r\nA: caf\u{e9}\t x\r\n\r\n").path, "/");
    }
}
