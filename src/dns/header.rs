//! The message header (RFC 1035 4.1.1): a read view and a mutable view over the first
//! twelve bytes of a message, and the flag word in between. Everything outside `dns/`
//! reads and patches headers through these, never by testing bits by hand.
//!
//! ```text
//!   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
//! |                      ID                       |  Header::id
//! |QR|  Opcode   |AA|TC|RD|RA| Z|AD|CD|   RCODE   |  Header::flags (a Flags)
//! |                    QDCOUNT                    |  Header::qdcount
//! |                    ANCOUNT                    |  ...
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! ```
//!
//! AD and CD are RFC 4035 3.1.6 and 3.2.2; the RCODE here is the header's four bits,
//! which an OPT record extends (see [`super::wire::message_rcode`]).

use super::wire::{HEADER_LEN, Rcode, flag};

/// The second 16-bit word of a header: QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// Mask of the opcode's four bits.
    const OPCODE: u16 = 0x7800;
    /// Mask of the rcode's four bits.
    const RCODE: u16 = 0x000F;

    /// Whether `bit` (one of [`flag`]'s constants) is set.
    #[inline]
    pub const fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// The same word with `bit` set or cleared.
    #[inline]
    #[must_use]
    pub const fn with(self, bit: u16, on: bool) -> Flags {
        Flags(if on { self.0 | bit } else { self.0 & !bit })
    }

    /// The message is a response.
    #[inline]
    pub const fn qr(self) -> bool {
        self.has(flag::QR)
    }

    /// The kind of query (0 QUERY, 4 NOTIFY, 5 UPDATE, see [`super::opcode`]).
    #[inline]
    pub const fn opcode(self) -> u8 {
        ((self.0 & Self::OPCODE) >> 11) as u8
    }

    /// The same word with another opcode (its low four bits).
    #[inline]
    #[must_use]
    pub const fn with_opcode(self, opcode: u8) -> Flags {
        Flags((self.0 & !Self::OPCODE) | (((opcode & 0xF) as u16) << 11))
    }

    /// Authoritative answer.
    #[inline]
    pub const fn aa(self) -> bool {
        self.has(flag::AA)
    }

    /// Truncated.
    #[inline]
    pub const fn tc(self) -> bool {
        self.has(flag::TC)
    }

    /// Recursion desired.
    #[inline]
    pub const fn rd(self) -> bool {
        self.has(flag::RD)
    }

    /// Recursion available.
    #[inline]
    pub const fn ra(self) -> bool {
        self.has(flag::RA)
    }

    /// The reserved bit (zero in every message we write).
    #[inline]
    pub const fn z(self) -> bool {
        self.has(flag::Z)
    }

    /// Authentic data (RFC 4035 3.2.3).
    #[inline]
    pub const fn ad(self) -> bool {
        self.has(flag::AD)
    }

    /// Checking disabled (RFC 4035 3.2.2).
    #[inline]
    pub const fn cd(self) -> bool {
        self.has(flag::CD)
    }

    /// The header's four rcode bits (an OPT record may extend them).
    #[inline]
    pub const fn rcode(self) -> Rcode {
        Rcode(self.0 & Self::RCODE)
    }

    /// The same word with the low four bits of `rcode`.
    #[inline]
    #[must_use]
    pub const fn with_rcode(self, rcode: Rcode) -> Flags {
        Flags((self.0 & !Self::RCODE) | (rcode.0 & Self::RCODE))
    }

    /// What a reply to a query with these flags starts from (RFC 1035 4.1.1, RFC 4035
    /// 3.2.2, as CoreDNS's `SetReply`): QR set, the opcode, RD and CD copied, every
    /// other bit clear.
    #[inline]
    #[must_use]
    pub const fn reply(self) -> Flags {
        Flags(flag::QR | (self.0 & (flag::RD | flag::CD | Self::OPCODE)))
    }

    /// The set bits' names in dig's order (`qr aa rd`), as CoreDNS's `{>rflags}`
    /// log field lists them, each passed to `f`.
    pub fn for_each_name(self, mut f: impl FnMut(&'static str)) {
        const NAMES: [(u16, &str); 8] = [
            (flag::QR, "qr"),
            (flag::AA, "aa"),
            (flag::TC, "tc"),
            (flag::RD, "rd"),
            (flag::RA, "ra"),
            (flag::Z, "z"),
            (flag::AD, "ad"),
            (flag::CD, "cd"),
        ];
        for (bit, name) in NAMES {
            if self.has(bit) {
                f(name);
            }
        }
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flags(opcode {}, rcode {}", self.opcode(), self.rcode().0)?;
        self.for_each_name(|n| {
            let _ = write!(f, " {n}");
        });
        f.write_str(")")
    }
}

/// A read view of a message's header. Made only over at least [`HEADER_LEN`] bytes,
/// so every accessor is a plain load.
#[derive(Clone, Copy)]
pub struct Header<'a>(&'a [u8; HEADER_LEN]);

impl<'a> Header<'a> {
    /// The header of `msg`; `None` when it is shorter than a header.
    #[inline]
    pub fn of(msg: &'a [u8]) -> Option<Header<'a>> {
        msg.first_chunk().map(Header)
    }

    #[inline]
    fn word(self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }

    /// The message ID.
    #[inline]
    pub fn id(self) -> u16 {
        self.word(0)
    }

    /// The flag word.
    #[inline]
    pub fn flags(self) -> Flags {
        Flags(self.word(2))
    }

    /// Whether this is a response carrying `id`: what an exchange waits for (a query
    /// echoed back, or a reply to another query, is not it; RFC 5452 section 9.1).
    #[inline]
    pub fn answers(self, id: u16) -> bool {
        self.id() == id && self.qr()
    }

    #[inline]
    pub fn qr(self) -> bool {
        self.flags().qr()
    }

    #[inline]
    pub fn opcode(self) -> u8 {
        self.flags().opcode()
    }

    #[inline]
    pub fn aa(self) -> bool {
        self.flags().aa()
    }

    #[inline]
    pub fn tc(self) -> bool {
        self.flags().tc()
    }

    #[inline]
    pub fn rd(self) -> bool {
        self.flags().rd()
    }

    #[inline]
    pub fn ra(self) -> bool {
        self.flags().ra()
    }

    #[inline]
    pub fn ad(self) -> bool {
        self.flags().ad()
    }

    #[inline]
    pub fn cd(self) -> bool {
        self.flags().cd()
    }

    /// The header's four rcode bits; [`super::wire::message_rcode`] adds the OPT
    /// record's extension.
    #[inline]
    pub fn rcode(self) -> Rcode {
        self.flags().rcode()
    }

    /// Entries in the question section.
    #[inline]
    pub fn qdcount(self) -> u16 {
        self.word(4)
    }

    /// Records in the answer section.
    #[inline]
    pub fn ancount(self) -> u16 {
        self.word(6)
    }

    /// Records in the authority section.
    #[inline]
    pub fn nscount(self) -> u16 {
        self.word(8)
    }

    /// Records in the additional section (the OPT record included).
    #[inline]
    pub fn arcount(self) -> u16 {
        self.word(10)
    }

    /// The four counts in section order: question, answer, authority, additional.
    #[inline]
    pub fn counts(self) -> [u16; 4] {
        [self.qdcount(), self.ancount(), self.nscount(), self.arcount()]
    }
}

impl std::fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Header(id {}, {:?}, counts {:?})",
            self.id(),
            self.flags(),
            self.counts()
        )
    }
}

/// A mutable view of a message's header, for code that patches a message in place
/// (an outgoing query's ID, a reply's flags and counts).
pub struct HeaderMut<'a>(&'a mut [u8; HEADER_LEN]);

impl<'a> HeaderMut<'a> {
    /// The header of `msg`; `None` when it is shorter than a header.
    #[inline]
    pub fn of(msg: &'a mut [u8]) -> Option<HeaderMut<'a>> {
        msg.first_chunk_mut().map(HeaderMut)
    }

    /// The header as it stands.
    #[inline]
    pub fn get(&self) -> Header<'_> {
        Header(self.0)
    }

    #[inline]
    fn set_word(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_id(&mut self, id: u16) {
        self.set_word(0, id);
    }

    #[inline]
    pub fn set_flags(&mut self, flags: Flags) {
        self.set_word(2, flags.0);
    }

    /// Sets or clears one flag bit (one of [`flag`]'s constants).
    #[inline]
    pub fn set_flag(&mut self, bit: u16, on: bool) {
        let f = self.get().flags().with(bit, on);
        self.set_flags(f);
    }

    /// Sets the header's four rcode bits from the low bits of `rcode`.
    #[inline]
    pub fn set_rcode(&mut self, rcode: Rcode) {
        let f = self.get().flags().with_rcode(rcode);
        self.set_flags(f);
    }

    /// Sets the four counts, in section order.
    #[inline]
    pub fn set_counts(&mut self, counts: [u16; 4]) {
        for (i, c) in counts.into_iter().enumerate() {
            self.set_word(4 + 2 * i, c);
        }
    }

    /// Sets the count of one section: 0 question, 1 answer, 2 authority, 3 additional.
    #[inline]
    pub fn set_count(&mut self, section: usize, count: u16) {
        self.set_word(4 + 2 * section, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::base::Message;

    /// Every flag bit and every opcode and rcode value, one at a time and all together,
    /// read by `domain`'s parser the way our view reads them.
    #[test]
    fn flags_read_as_domain_reads_them() {
        let mut words: Vec<u16> = (0..16).map(|b| 1u16 << b).collect();
        words.extend((0..16).map(|op| (op as u16) << 11));
        words.extend([0, 0xFFFF, 0x8180, 0x0100, 0x8583, 0x0110]);
        for w in words {
            let mut msg = [0u8; HEADER_LEN];
            msg[0..2].copy_from_slice(&0xBEEFu16.to_be_bytes());
            msg[2..4].copy_from_slice(&w.to_be_bytes());
            msg[4..12].copy_from_slice(&[0, 1, 0, 2, 0, 3, 0, 4]);
            let ours = Header::of(&msg).unwrap();
            let theirs = Message::from_octets(&msg[..]).unwrap();
            let (h, c) = (theirs.header(), theirs.header_counts());
            assert_eq!(ours.id(), h.id(), "{w:#06x}");
            assert_eq!(ours.qr(), h.qr(), "{w:#06x}");
            assert_eq!(ours.opcode(), h.opcode().to_int(), "{w:#06x}");
            assert_eq!(ours.aa(), h.aa(), "{w:#06x}");
            assert_eq!(ours.tc(), h.tc(), "{w:#06x}");
            assert_eq!(ours.rd(), h.rd(), "{w:#06x}");
            assert_eq!(ours.ra(), h.ra(), "{w:#06x}");
            assert_eq!(ours.flags().z(), h.z(), "{w:#06x}");
            assert_eq!(ours.ad(), h.ad(), "{w:#06x}");
            assert_eq!(ours.cd(), h.cd(), "{w:#06x}");
            assert_eq!(ours.rcode().0, u16::from(h.rcode().to_int()), "{w:#06x}");
            assert_eq!(
                ours.counts(),
                [c.qdcount(), c.ancount(), c.nscount(), c.arcount()],
                "{w:#06x}"
            );
        }
    }

    /// What the mutable view writes, `domain` reads back; and setting a bit or field
    /// leaves the others as they were.
    #[test]
    fn setters_round_trip_through_domain() {
        let mut msg = vec![0u8; HEADER_LEN + 3];
        let mut h = HeaderMut::of(&mut msg).unwrap();
        h.set_id(0x1234);
        h.set_flags(Flags::default().with_opcode(5).with(flag::RD, true));
        h.set_flag(flag::QR, true);
        h.set_flag(flag::AD, true);
        h.set_flag(flag::CD, true);
        h.set_flag(flag::CD, false);
        h.set_rcode(Rcode::BADCOOKIE); // 23: only the low four bits (7) fit here
        h.set_counts([1, 2, 3, 4]);
        h.set_count(3, 9);
        let m = Message::from_octets(&msg[..]).unwrap();
        let (d, c) = (m.header(), m.header_counts());
        assert_eq!(d.id(), 0x1234);
        assert!(d.qr() && d.rd() && d.ad() && !d.cd() && !d.aa() && !d.tc() && !d.ra());
        assert_eq!(d.opcode().to_int(), 5);
        assert_eq!(d.rcode().to_int(), 7);
        assert_eq!([c.qdcount(), c.ancount(), c.nscount(), c.arcount()], [1, 2, 3, 9]);
        // The trailing bytes are not the header's.
        assert_eq!(&msg[HEADER_LEN..], &[0, 0, 0]);
    }

    #[test]
    fn short_messages_have_no_header() {
        assert!(Header::of(&[0u8; HEADER_LEN - 1]).is_none());
        assert!(HeaderMut::of(&mut [0u8; 3]).is_none());
        assert!(Header::of(&[0u8; HEADER_LEN]).is_some());
    }

    #[test]
    fn reply_flags_keep_opcode_rd_cd_only() {
        let q = Flags(0xFFFF);
        let r = q.reply();
        assert!(r.qr() && r.rd() && r.cd());
        assert_eq!(r.opcode(), 0xF);
        assert!(!r.aa() && !r.tc() && !r.ra() && !r.z() && !r.ad());
        assert_eq!(r.rcode(), Rcode::NOERROR);
        assert_eq!(Flags(0).reply(), Flags(flag::QR));
    }

    #[test]
    fn answers_wants_the_id_and_qr() {
        let mut m = [0u8; HEADER_LEN];
        m[0..2].copy_from_slice(&7u16.to_be_bytes());
        assert!(!Header::of(&m).unwrap().answers(7), "a query echoed back");
        HeaderMut::of(&mut m).unwrap().set_flag(flag::QR, true);
        assert!(Header::of(&m).unwrap().answers(7));
        assert!(!Header::of(&m).unwrap().answers(8));
    }

    #[test]
    fn names_in_dig_order() {
        let mut names = Vec::new();
        Flags(0x8510).for_each_name(|n| names.push(n));
        assert_eq!(names, ["qr", "aa", "rd", "cd"]);
    }
}
