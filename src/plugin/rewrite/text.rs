//! Names as text, on the stack: CoreDNS's rewrite rules match and build names as
//! presentation-form strings (`www.example.org.`), so the rules here do too, in a
//! fixed buffer that never allocates.

use std::mem::MaybeUninit;

use crate::dns::wire::MAX_NAME_LEN;

/// Room for the longest name in presentation form: 255 wire bytes, each escaped as
/// `\DDD` at worst, is under 1,024 characters.
pub const TEXT_CAP: usize = 1024;

/// A name (or any short string) in a fixed buffer. The buffer is left uninitialised
/// past `len`: a query builds a few of these, and zeroing 1 KiB each time cost more
/// than the rest of the rewrite (benches/inprocess.rs).
pub struct Text {
    buf: [MaybeUninit<u8>; TEXT_CAP],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text::new()
    }
}

impl Text {
    pub fn new() -> Text {
        Text {
            buf: [MaybeUninit::uninit(); TEXT_CAP],
            len: 0,
        }
    }

    /// The bytes written so far.
    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes have been written (every writer below writes
        // before it moves `len` past what it wrote), and `len <= TEXT_CAP`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }

    /// Writes `src` at `len` and moves `len` past it; the caller checked the room.
    #[inline]
    fn append(&mut self, src: &[u8]) {
        debug_assert!(self.len + src.len() <= TEXT_CAP);
        let dst = &mut self.buf[self.len..self.len + src.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            *d = MaybeUninit::new(*s);
        }
        self.len += src.len();
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: the buffer up to `len` holds only whole `&str`s (`push`, which
        // refuses a string it cannot take whole) and ASCII bytes (`set_wire`), so it is
        // valid UTF-8; checking it again on every read would cost more than the match.
        unsafe { std::str::from_utf8_unchecked(self.bytes()) }
    }

    /// Replaces the text with a copy of `other` (only the bytes in use are copied).
    #[inline]
    pub fn copy_from(&mut self, other: &Text) {
        self.len = 0;
        self.append(other.bytes());
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `s`; false (and nothing appended) when it does not fit.
    pub fn push(&mut self, s: &str) -> bool {
        if self.len + s.len() > TEXT_CAP {
            return false;
        }
        self.append(s.as_bytes());
        true
    }

    /// Replaces the text with `s`.
    pub fn set(&mut self, s: &str) -> bool {
        self.clear();
        self.push(s)
    }

    /// Replaces the text with an uncompressed wire name in presentation form, escaped as
    /// miekg/dns prints names (so matching sees what CoreDNS's rules see), lower-cased
    /// when `lower`.
    pub fn set_wire(&mut self, wire: &[u8], lower: bool) {
        self.clear();
        let mut at = 0;
        while let Some(&l) = wire.get(at) {
            let l = l as usize;
            if l == 0 {
                break;
            }
            let label = wire.get(at + 1..at + 1 + l).unwrap_or(&[]);
            // Most labels need no escape: copied whole.
            if self.len + label.len() < TEXT_CAP && label.iter().all(|&b| plain(b)) {
                if lower {
                    let dst = &mut self.buf[self.len..self.len + label.len()];
                    for (d, s) in dst.iter_mut().zip(label) {
                        *d = MaybeUninit::new(s.to_ascii_lowercase());
                    }
                    self.len += label.len();
                } else {
                    self.append(label);
                }
                self.byte(b'.');
                at += 1 + l;
                continue;
            }
            for &b in label {
                let b = if lower { b.to_ascii_lowercase() } else { b };
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' | b' ' => {
                        self.byte(b'\\');
                        self.byte(b);
                    }
                    0x21..=0x7E => self.byte(b),
                    _ => {
                        self.byte(b'\\');
                        self.byte(b'0' + b / 100);
                        self.byte(b'0' + (b / 10) % 10);
                        self.byte(b'0' + b % 10);
                    }
                }
            }
            self.byte(b'.');
            at += 1 + l;
        }
        if self.len == 0 {
            self.byte(b'.');
        }
    }

    fn byte(&mut self, b: u8) {
        // A wire name of at most 255 bytes never needs more than TEXT_CAP characters.
        if self.len < TEXT_CAP {
            self.buf[self.len] = MaybeUninit::new(b);
            self.len += 1;
        }
    }

    /// The name in lower-cased wire form, or `None` when it is not a valid name (an
    /// empty label, a label over 63 bytes, a name over 255): CoreDNS's "invalid name
    /// after rewrite".
    pub fn to_wire(&self, out: &mut [u8; MAX_NAME_LEN]) -> Option<usize> {
        crate::dns::wire::parse_name(self.as_str(), out)
    }
}

/// A byte written as it is in presentation form (no escape).
#[inline]
pub fn plain(b: u8) -> bool {
    PLAIN[b as usize]
}

/// [`plain`] for every byte: a lookup costs a third of the comparisons on the wire
/// path of a rewritten name (issue 12).
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b <= 0x7E {
        t[b] = !matches!(b as u8, b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$');
        b += 1;
    }
    t
};

/// CoreDNS's `plugin.Name(s).Normalize()`: lower-cased, fully qualified.
pub fn normalize(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_to_text_escapes_as_miekg_prints() {
        let mut t = Text::new();
        t.set_wire(b"\x03WwW\x03a.b\x00", true);
        assert_eq!(t.as_str(), "www.a\\.b.");
        t.set_wire(b"\x03WwW\x01\x07\x00", false);
        assert_eq!(t.as_str(), "WwW.\\007.");
        t.set_wire(b"\x00", true);
        assert_eq!(t.as_str(), ".");
        let mut w = [0u8; MAX_NAME_LEN];
        t.set("a..b.");
        assert_eq!(t.to_wire(&mut w), None);
        t.set("Web.NS.svc.");
        let n = t.to_wire(&mut w).unwrap();
        assert_eq!(&w[..n], b"\x03web\x02ns\x03svc\x00");
        assert_eq!(normalize("Foo.Org"), "foo.org.");
    }
}
