//! The watch stream read one line at a time, each line bounded: at most `max` bytes of
//! a line are kept, a longer one is read past in the reader's pieces.

use std::io::{self, BufRead};

use super::READ_BUFFER;
use crate::kubernetes::decode::{self, DecodeError, WatchEvent};
use crate::kubernetes::model::Resource;

/// How many times its cap an over-long watch line is read (and dropped) to find its
/// end: past that (256 MiB) the stream is not a watch stream, and it fails (a new watch
/// follows, after a backoff).
pub(super) const SKIP_FACTOR: u64 = 64;

/// What the next line of a watch stream holds.
#[doc(hidden)]
#[derive(Debug)]
pub enum NextLine {
    /// The stream ended.
    End,
    /// A line of `max` bytes or more, read past (in the reader's pieces, never held
    /// whole) without telling which object it was.
    TooLong,
    /// An empty line (a keep-alive).
    Blank,
    /// An event, or why the line is not one. A line over `max` whose first `max` bytes
    /// name its object is [`WatchEvent::Rejected`].
    Event(Result<WatchEvent, DecodeError>),
}

/// Reads and decodes the next line of a watch stream of `resource` into `line`. At most
/// `max` bytes of a line are kept; the rest of a longer one is read and dropped, and
/// only its start is looked at ([`decode::probe_event`]). Public (hidden) so that the
/// fuzz targets can feed it any byte stream (`clusterdns::fuzzing`).
#[doc(hidden)]
pub fn next_line(stream: &mut impl BufRead, line: &mut Vec<u8>, max: u64, resource: Resource) -> io::Result<NextLine> {
    line.clear();
    let read = io::Read::take(&mut *stream, max).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(NextLine::End);
    }
    let next = if read as u64 == max && line.last() != Some(&b'\n') {
        skip_line(stream, max.saturating_mul(SKIP_FACTOR))?;
        match decode::probe_event(resource, line, max) {
            Some(event) => NextLine::Event(Ok(event)),
            None => NextLine::TooLong,
        }
    } else if line.trim_ascii().is_empty() {
        NextLine::Blank
    } else {
        NextLine::Event(decode::decode_event(resource, line))
    };
    // A huge line's buffer is not kept for the small lines that follow.
    if line.capacity() > 4 * READ_BUFFER {
        *line = Vec::new();
    }
    Ok(next)
}

/// Reads to the end of the line without keeping it; fails after `most` bytes.
fn skip_line(stream: &mut impl BufRead, most: u64) -> io::Result<()> {
    match crate::lines::skip_line(stream, most)? {
        Some(_) => Ok(()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a watch line longer than {}", crate::config::read::human_bytes(most)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    fn event(kind: &str, object: &str) -> String {
        format!(r#"{{"type":"{kind}","object":{object}}}"#)
    }

    fn svc(name: &str, rv: u32) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"ns","resourceVersion":"{rv}","managedFields":[{{"manager":"x"}}]}},"spec":{{"clusterIP":"10.0.0.{rv}"}}}}"#,
            rv = rv % 250
        )
    }

    #[test]
    fn an_over_long_line_is_skipped_in_pieces_and_named_when_its_start_tells() {
        let max = 200u64;
        let pad = "x".repeat(1000);
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            // The object's metadata within the first 200 bytes: its key is known.
            event(
                "MODIFIED",
                &format!(
                    r#"{{"kind":"Service","metadata":{{"name":"big","namespace":"ns","resourceVersion":"5"}},"spec":{{"x":"{pad}"}}}}"#
                )
            ),
            // The metadata itself too long: nothing is known.
            event(
                "ADDED",
                &format!(r#"{{"metadata":{{"name":"big","annotations":{{"x":"{pad}"}}}}}}"#)
            ),
            event("ADDED", &svc("after", 6)),
            "y".repeat(64 * 200 + 500),
        );
        let mut stream = BufReader::with_capacity(64, text.as_bytes());
        let mut line = Vec::new();
        let mut next = || next_line(&mut stream, &mut line, max, Resource::Services);
        match next().unwrap() {
            NextLine::Event(Ok(WatchEvent::Rejected {
                key,
                resource_version,
                error,
            })) => {
                assert_eq!((&*key.namespace, &*key.name, &*resource_version), ("ns", "big", "5"));
                assert_eq!(error, DecodeError::TooLarge(200));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(next().unwrap(), NextLine::TooLong));
        assert!(matches!(
            next().unwrap(),
            NextLine::Event(Ok(WatchEvent::Upsert { .. }))
        ));
        // A line without end (64 times the cap and more) is no watch stream.
        assert_eq!(next().unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
