//! DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018).
//!
//! ```text
//!   query  OPT: COOKIE = client cookie (8)  [ + server cookie (8..32) ]
//!   reply  OPT: COOKIE = client cookie (8)  + server cookie (16):
//!          version 1 | reserved 0 0 0 | timestamp (4, unix seconds) | hash (8)
//!          hash = SipHash-2-4(secret; client cookie | version | reserved | timestamp | client IP)
//! ```
//!
//! Every query that carries a COOKIE option gets one back with a fresh server cookie;
//! a query whose server cookie is one of ours, for this client and not stale, is marked
//! valid: it cannot have come from a spoofed address (the `rrl` plugin exempts it).
//! An invalid or stale server cookie is not an error: the query is answered normally,
//! with a new cookie (RFC 7873 5.2.3; BADCOOKIE is only for servers that require
//! cookies). A malformed option gets FORMERR (5.2.2).
//!
//! The secret is random per process unless set ([`set_secret`]): replicas that should
//! accept each other's cookies share one.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The COOKIE option code (RFC 7873 8).
pub const OPTION: u16 = 10;
/// Client cookie length.
pub const CLIENT_LEN: usize = 8;
/// The server cookie this server issues (RFC 9018 4).
pub const SERVER_LEN: usize = 16;
/// The COOKIE option data of a reply: client cookie and server cookie.
pub const REPLY_LEN: usize = CLIENT_LEN + SERVER_LEN;
const VERSION: u8 = 1;
/// A server cookie older than this is stale (RFC 9018 4.3: one hour).
const MAX_AGE: u32 = 3600;
/// ...and one from further in the future than this is invalid (RFC 9018 4.3: 5 minutes).
const MAX_AHEAD: u32 = 300;

static SECRET: OnceLock<[u8; 16]> = OnceLock::new();

/// Sets the server secret, before the first cookie is made; false if one is in use.
pub fn set_secret(secret: [u8; 16]) -> bool {
    SECRET.set(secret).is_ok()
}

/// The environment variable that sets the server secret: 32 hex digits.
pub const SECRET_ENV: &str = "CLUSTERDNS_COOKIE_SECRET";

/// Sets the secret from [`SECRET_ENV`] when it is set; an error names what is wrong.
pub fn secret_from_env() -> Result<(), String> {
    let Some(v) = std::env::var_os(SECRET_ENV) else {
        return Ok(());
    };
    let v = v.to_string_lossy();
    let v = v.trim();
    let bytes: Option<Vec<u8>> = (v.len() == 32 && v.is_ascii())
        .then(|| {
            (0..16)
                .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok())
                .collect()
        })
        .flatten();
    let Some(bytes) = bytes else {
        return Err(format!("{SECRET_ENV}: want 32 hexadecimal digits (a 128-bit secret)"));
    };
    set_secret(bytes.try_into().expect("16 bytes"));
    Ok(())
}

/// Makes the secret now, unless set or made already: the binary calls it at start-up,
/// so that no worker ever waits for the kernel's random numbers.
pub fn init() {
    let _ = secret();
}

fn secret() -> &'static [u8; 16] {
    SECRET.get_or_init(|| {
        let mut s = [0u8; 16];
        loop {
            // SAFETY: getrandom(2) writes at most `s.len()` bytes into `s`.
            let n = unsafe { libc::getrandom(s.as_mut_ptr().cast(), s.len(), 0) };
            if n == s.len() as isize {
                return s;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        // No getrandom(2): std's hash keys, which it seeds from the system's entropy.
        use std::hash::{BuildHasher, Hasher};
        for (i, half) in s.chunks_exact_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        s
    })
}

/// What a query's COOKIE option means for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    /// The COOKIE option data to send back.
    pub reply: [u8; REPLY_LEN],
    /// The query's server cookie was ours, for this client, and current.
    pub valid: bool,
}

/// Why a COOKIE option is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Reads a query's COOKIE option `data` from `client` at `now` (unix seconds): the
/// reply's cookie and whether the server cookie was valid. Lengths other than 8 (a
/// client cookie alone) or 16 to 40 (with a server cookie of 8 to 32 bytes) are
/// malformed (RFC 7873 5.2.2).
pub fn read(data: &[u8], client: IpAddr, now: u32) -> Result<Cookie, Malformed> {
    if data.len() != CLIENT_LEN && !(CLIENT_LEN + 8..=CLIENT_LEN + 32).contains(&data.len()) {
        return Err(Malformed);
    }
    let mut cc = [0u8; CLIENT_LEN];
    cc.copy_from_slice(&data[..CLIENT_LEN]);
    let valid = data.len() == REPLY_LEN && is_valid(&cc, &data[CLIENT_LEN..], client, now);
    let mut reply = [0u8; REPLY_LEN];
    reply[..CLIENT_LEN].copy_from_slice(&cc);
    reply[CLIENT_LEN..].copy_from_slice(&server_cookie(secret(), &cc, client, now));
    Ok(Cookie { reply, valid })
}

/// The current time as RFC 9018 timestamps count it.
pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Whether `server` is a cookie this server made for `cc` and `client`, issued no more
/// than an hour before `now` and no more than five minutes after it (serial number
/// arithmetic, so the 2106 wrap of the 32-bit timestamp is harmless).
fn is_valid(cc: &[u8; CLIENT_LEN], server: &[u8], client: IpAddr, now: u32) -> bool {
    is_valid_with(secret(), cc, server, client, now)
}

fn is_valid_with(secret: &[u8; 16], cc: &[u8; CLIENT_LEN], server: &[u8], client: IpAddr, now: u32) -> bool {
    if server.len() != SERVER_LEN || server[0] != VERSION {
        return false;
    }
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    let age = now.wrapping_sub(stamp);
    if age > MAX_AGE && age <= u32::MAX - MAX_AHEAD {
        return false;
    }
    // The reserved bytes are hashed as received (RFC 9018 4.2: not checked for zero).
    let header: [u8; 8] = server[..8].try_into().expect("8 bytes");
    let want = hash(secret, cc, &header, client);
    // Constant time: no early exit on the first differing byte.
    want.iter().zip(&server[8..]).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// The RFC 9018 server cookie for client cookie `cc` from `client` at `stamp`.
fn server_cookie(secret: &[u8; 16], cc: &[u8; CLIENT_LEN], client: IpAddr, stamp: u32) -> [u8; SERVER_LEN] {
    let mut out = [0u8; SERVER_LEN];
    out[0] = VERSION;
    out[4..8].copy_from_slice(&stamp.to_be_bytes());
    let header: [u8; 8] = out[..8].try_into().expect("8 bytes");
    out[8..].copy_from_slice(&hash(secret, cc, &header, client));
    out
}

/// SipHash-2-4 over the client cookie, the server cookie's version, reserved and
/// timestamp bytes, and the client address (4 or 16 bytes), as little-endian bytes.
fn hash(secret: &[u8; 16], cc: &[u8; CLIENT_LEN], header: &[u8; 8], client: IpAddr) -> [u8; 8] {
    let mut input = [0u8; CLIENT_LEN + 8 + 16];
    input[..CLIENT_LEN].copy_from_slice(cc);
    input[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(header);
    let len = match client {
        IpAddr::V4(a) => {
            input[16..20].copy_from_slice(&a.octets());
            20
        }
        IpAddr::V6(a) => {
            input[16..32].copy_from_slice(&a.octets());
            32
        }
    };
    siphash24(secret, &input[..len]).to_le_bytes()
}

/// SipHash-2-4 (Aumasson and Bernstein) of `msg` under a 128-bit `key`.
fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut blocks = msg.chunks_exact(8);
    for b in &mut blocks {
        compress(&mut v, u64::from_le_bytes(b.try_into().expect("8 bytes")));
    }
    let mut last = [0u8; 8];
    let rest = blocks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn siphash_matches_the_reference_vector_and_std() {
        // The SipHash paper's example: key 00..0f, message 00..0e.
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
        // std's (deprecated) SipHasher is SipHash-2-4 too: every length from 0 to 40.
        #[allow(deprecated)]
        for len in 0..=40 {
            use std::hash::Hasher;
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut h = std::hash::SipHasher::new_with_keys(
                u64::from_le_bytes(key[..8].try_into().unwrap()),
                u64::from_le_bytes(key[8..].try_into().unwrap()),
            );
            h.write(&msg);
            assert_eq!(siphash24(&key, &msg), h.finish(), "length {len}");
        }
    }

    /// RFC 9018 Appendix A: (secret, client IP, query cookie, time, reply cookie).
    const RFC_9018: [(&str, &str, &str, u32, &str); 4] = [
        (
            "e5e973e5a6b2a43f48e7dc849e37bfcf",
            "198.51.100.100",
            "2464c4abcf10c957",
            1559731985,
            "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
        ),
        (
            "e5e973e5a6b2a43f48e7dc849e37bfcf",
            "198.51.100.100",
            "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
            1559734385,
            "2464c4abcf10c957010000005cf7a871d4a564a1442aca77",
        ),
        (
            "e5e973e5a6b2a43f48e7dc849e37bfcf",
            "203.0.113.203",
            "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
            1559734700,
            "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e",
        ),
        (
            "445536bcd2513298075a5d379663c962",
            "2001:db8:220:1:59de:d0f4:8769:82b8",
            "22681ab97d52c298010000005cf7c57926556bd0934c72f8",
            1559741961,
            "22681ab97d52c298010000005cf7c609a6bb79d16625507a",
        ),
    ];

    #[test]
    fn rfc_9018_test_vectors() {
        for (secret, ip, query, now, reply) in RFC_9018 {
            let secret: [u8; 16] = hex(secret).try_into().unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            let query = hex(query);
            let cc: [u8; 8] = query[..8].try_into().unwrap();
            let made = server_cookie(&secret, &cc, ip, now);
            assert_eq!(&made[..], &hex(reply)[8..], "reply to {ip}");
        }
        // A.2's query carries A.1's cookie, 40 minutes old: still valid (and A.3's, with
        // reserved bytes abcdef, 2 hours old: stale, but its hash is right).
        let secret: [u8; 16] = hex(RFC_9018[0].0).try_into().unwrap();
        let a2 = hex(RFC_9018[1].2);
        let cc: [u8; 8] = a2[..8].try_into().unwrap();
        let ip: IpAddr = RFC_9018[1].1.parse().unwrap();
        assert!(is_valid_with(&secret, &cc, &a2[8..], ip, 1559734385));
        let a3 = hex(RFC_9018[2].2);
        let cc: [u8; 8] = a3[..8].try_into().unwrap();
        let ip: IpAddr = RFC_9018[2].1.parse().unwrap();
        assert!(is_valid_with(&secret, &cc, &a3[8..], ip, 1559727985 + 60));
        assert!(!is_valid_with(&secret, &cc, &a3[8..], ip, 1559734700));
        // A.4's query was made with the secret since rolled over.
        let a4 = hex(RFC_9018[3].2);
        let cc: [u8; 8] = a4[..8].try_into().unwrap();
        let ip: IpAddr = RFC_9018[3].1.parse().unwrap();
        let old: [u8; 16] = hex("dd3bdf9344b678b185a6f5cb60fca715").try_into().unwrap();
        let new: [u8; 16] = hex(RFC_9018[3].0).try_into().unwrap();
        assert!(is_valid_with(&old, &cc, &a4[8..], ip, 1559741961));
        assert!(!is_valid_with(&new, &cc, &a4[8..], ip, 1559741961));
    }

    #[test]
    fn malformed_lengths_are_rejected() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for len in [0, 1, 7, 9, 15, 41, 48] {
            assert_eq!(read(&vec![1; len], ip, 0), Err(Malformed), "length {len}");
        }
        for len in [8, 16, 24, 40] {
            assert!(read(&vec![1; len], ip, 0).is_ok(), "length {len}");
        }
    }

    #[test]
    fn our_cookie_is_valid_for_its_client_for_an_hour() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let now = 1_700_000_000;
        let first = read(&hex("0102030405060708"), a, now).unwrap();
        assert!(!first.valid);
        assert_eq!(&first.reply[..8], &hex("0102030405060708")[..]);
        assert_eq!(first.reply[8], VERSION);
        let back = first.reply;
        assert!(read(&back, a, now + 10).unwrap().valid);
        assert!(read(&back, a, now + MAX_AGE).unwrap().valid);
        assert!(!read(&back, a, now + MAX_AGE + 1).unwrap().valid, "stale");
        assert!(read(&back, a, now - MAX_AHEAD).unwrap().valid);
        assert!(!read(&back, a, now - MAX_AHEAD - 1).unwrap().valid, "from the future");
        assert!(!read(&back, b, now).unwrap().valid, "another client");
        let mut other_cc = back;
        other_cc[0] ^= 1;
        assert!(!read(&other_cc, a, now).unwrap().valid, "another client cookie");
        for i in 8..REPLY_LEN {
            let mut t = back;
            t[i] ^= 0x40;
            assert!(!read(&t, a, now).unwrap().valid, "byte {i} tampered");
        }
        // A short (8-byte) server cookie is never ours.
        assert!(!read(&back[..16], a, now).unwrap().valid);
        // The reply always carries a fresh cookie for the current time.
        let again = read(&back, a, now + 100).unwrap();
        assert_eq!(&again.reply[12..16], &(now + 100).to_be_bytes());
    }
}
