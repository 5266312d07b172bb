//! Reading the files a Corefile names (the Corefile itself, the files it imports,
//! `forward`'s resolv.conf): regular files only, and never more than a cap.
//!
//! A FIFO, a device (`/dev/zero`), a directory or a socket is refused before a byte is
//! read, with what it is named in the error; the open itself does not block (`open`
//! on a FIFO waits for a writer unless `O_NONBLOCK` is given), so a path swapped for a
//! FIFO after the check is caught too. A regular file is read through `take(cap + 1)`:
//! one that is larger, or still growing while it is read, costs at most `cap + 1`
//! bytes before it is refused.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest Corefile, and largest file one imports: 1 MiB. Real Corefiles are a few
/// hundred bytes to a few KiB (CoreDNS's own default is 11 lines; a Corefile generated
/// with a server block per tenant or stub zone stays in the tens of KiB), so a
/// thousand-fold margin costs a user nothing and bounds what one mistaken `import`
/// (of a log, an image, `/dev/zero`) can cost.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Largest total of the Corefile and everything expanded into it: 4 MiB. Every
/// expansion counts, so a file or a snippet imported ten times counts ten times: this
/// bounds the parse (tokens, directives) of any Corefile, including a small one whose
/// snippets import each other many times over.
pub const MAX_TOTAL_BYTES: u64 = 4 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Not a regular file: what it is instead (`a directory`, `a FIFO`...).
    NotRegular(&'static str),
    /// Larger than the cap, in bytes.
    TooLarge(u64),
    /// The file cannot be opened or read.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotRegular(what) => write!(f, "not a regular file ({what})"),
            ReadError::TooLarge(cap) => write!(f, "larger than {}", human_bytes(*cap)),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// `1 MiB`, `64 KiB`, `1500 bytes`: a cap as the operator reads it.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What a file that is not a regular file is, for the error message.
fn kind_of(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Opens `path` (following symbolic links, as ConfigMap mounts need) if it is a regular
/// file, without ever blocking in `open`; returns it with its metadata as opened.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    // A cheap first check, so that a socket (which `open` refuses with a confusing
    // ENXIO) or a FIFO is named for what it is.
    if let Some(what) = kind_of(&std::fs::metadata(path)?) {
        return Err(ReadError::NotRegular(what));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // What was opened is what counts: the path may have been replaced since the check.
    let meta = file.metadata()?;
    if let Some(what) = kind_of(&meta) {
        return Err(ReadError::NotRegular(what));
    }
    Ok((file, meta))
}

/// Reads all of `reader` if it holds at most `cap` bytes; never reads more than
/// `cap + 1`.
pub fn read_capped(reader: impl Read, cap: u64, size_hint: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::with_capacity(size_hint.min(cap) as usize);
    reader.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

/// Reads the regular file at `path`, if it holds at most `cap` bytes.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    read_capped(file, cap, meta.len())
}

/// [`read_regular`] for text: the file must be UTF-8.
pub fn read_regular_text(path: &Path, cap: u64) -> Result<String, ReadError> {
    let bytes = read_regular(path, cap)?;
    String::from_utf8(bytes)
        .map_err(|_| ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("clusterdns-read-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let dir = scratch("ok");
        let path = dir.join("f");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_regular_text(&path, 5).unwrap(), "hello");
        assert!(matches!(read_regular(&path, 4), Err(ReadError::TooLarge(4))));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_regular_text(&path, 5).unwrap_err().to_string().contains("UTF-8"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_at_once() {
        let t = Instant::now();
        let e = read_regular(Path::new("/dev/zero"), MAX_FILE_BYTES).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let dir = scratch("kinds");
        assert_eq!(
            read_regular(&dir, MAX_FILE_BYTES).unwrap_err().to_string(),
            "not a regular file (a directory)"
        );
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without a writer, a blocking open would wait here for ever.
        assert_eq!(
            read_regular(&fifo, MAX_FILE_BYTES).unwrap_err().to_string(),
            "not a regular file (a FIFO)"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_endless_stream_costs_the_cap_and_no_more() {
        // /dev/zero read through the cap, as a growing file would be.
        let file = File::open("/dev/zero").unwrap();
        assert!(matches!(read_capped(file, 1 << 16, 0), Err(ReadError::TooLarge(_))));
    }

    #[test]
    fn caps_read_as_units() {
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(64 << 10), "64 KiB");
        assert_eq!(human_bytes(1500), "1500 bytes");
    }
}
