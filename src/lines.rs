//! Bounded line reading shared by the readers of line-oriented input (the hosts file,
//! the Kubernetes watch stream): a line too long to keep is read past in the reader's
//! own pieces, never held whole, and never further than a stated bound.

use std::io::{self, BufRead};

/// Reads to the end of the current line (its `\n` included, or the end of the input)
/// without keeping it, in the reader's pieces. Returns the bytes read, or `None` when
/// more than `most` bytes were read without reaching the end of the line (what is left
/// of it is then still unread).
pub fn skip_line(reader: &mut impl BufRead, most: u64) -> io::Result<Option<u64>> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(Some(skipped));
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok(Some(skipped + i as u64 + 1));
        }
        let n = buf.len();
        reader.consume(n);
        skipped += n as u64;
        if skipped > most {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_to_the_end_of_the_line_or_gives_up_past_the_bound() {
        let text = b"0123456789\nnext\nlast";
        let mut r = io::BufReader::with_capacity(4, &text[..]);
        assert_eq!(skip_line(&mut r, 100).unwrap(), Some(11));
        let mut rest = String::new();
        io::Read::read_to_string(&mut r, &mut rest).unwrap();
        assert_eq!(rest, "next\nlast");
        // The end of the input ends the line too.
        let mut r = io::BufReader::with_capacity(4, &b"last"[..]);
        assert_eq!(skip_line(&mut r, 100).unwrap(), Some(4));
        // Past the bound: read in pieces of 4, it gives up after 8 of them.
        let mut r = io::BufReader::with_capacity(4, &text[..]);
        assert_eq!(skip_line(&mut r, 7).unwrap(), None);
        // An endless line costs the bound, not the input.
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let mut r = io::BufReader::with_capacity(1 << 10, zero);
        assert_eq!(skip_line(&mut r, 1 << 20).unwrap(), None);
    }
}
