//! CRC32C in the forms S3 reports it: sent with every PUT and part so that the server checks
//! the bytes it received and keeps the checksum, and computed over local files so `verify`
//! can compare them with the checksum the server holds without downloading the object.
//!
//! S3 shows a CRC32C as base64 of its four big-endian bytes. A single PUT (or a multipart
//! upload created with the full-object checksum type) gets the CRC32C of the whole object. A
//! multipart upload created with the default (composite) type gets
//! `base64(CRC32C(crc(part 1) ‖ … ‖ crc(part N)))-N`: the checksum of the concatenated
//! big-endian part checksums, suffixed with the part count, which depends on the part size
//! the uploader chose. Files are read in pieces: memory stays flat for any size.

use std::io::{self, Read};

use skynet_core::SourceFile;

use base64::Engine;
use crc_fast::{CrcAlgorithm, Digest};

/// Bytes read per call while hashing.
const READ_BUF: usize = 256 * 1024;

/// A CRC32C as S3 shows it: base64 of the big-endian bytes.
fn encode(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC32C of bytes in memory, as S3 shows it: sent with each PUT and part, because the
/// SDK (configured to add checksums only where an operation requires one) would otherwise
/// send the algorithm header without a value, which S3 refuses (and some servers ignore,
/// checking nothing).
pub(crate) fn crc32c_of(bytes: &[u8]) -> String {
    encode(crc_fast::crc32_iscsi(bytes))
}

/// Feeds up to `limit` bytes of `reader` to `digest`; returns how many there were.
fn feed(
    reader: &mut impl Read,
    digest: &mut Digest,
    limit: u64,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < limit {
        let want = (limit - done).min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        digest.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

/// The full-object CRC32C of everything `reader` yields, as S3 shows it.
pub(crate) fn full_crc32c(mut reader: impl Read) -> io::Result<String> {
    let mut digest = Digest::new(CrcAlgorithm::Crc32Iscsi);
    let mut buf = vec![0u8; READ_BUF];
    feed(&mut reader, &mut digest, u64::MAX, &mut buf)?;
    Ok(encode(digest.finalize() as u32))
}

/// The composite CRC32C of what `reader` yields when uploaded in parts of `part_size` bytes
/// (the last one shorter), as S3 shows it, `-N` suffix included. An empty input is one part.
pub(crate) fn composite_crc32c(mut reader: impl Read, part_size: u64) -> io::Result<String> {
    let part_size = part_size.max(1);
    let mut outer = Digest::new(CrcAlgorithm::Crc32Iscsi);
    let mut buf = vec![0u8; READ_BUF];
    let mut parts = 0u64;
    loop {
        let mut part = Digest::new(CrcAlgorithm::Crc32Iscsi);
        let n = feed(&mut reader, &mut part, part_size, &mut buf)?;
        if n == 0 && parts > 0 {
            break;
        }
        outer.update(&(part.finalize() as u32).to_be_bytes());
        parts += 1;
        if n < part_size {
            break;
        }
    }
    Ok(format!("{}-{parts}", encode(outer.finalize() as u32)))
}

/// The composite part count in a checksum (`…-N`), or `None` for a full-object one.
pub(crate) fn composite_parts(checksum: &str) -> Option<u64> {
    checksum.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// [`full_crc32c`] of the local file, read through [`SourceFile::open`].
pub(crate) fn full_crc32c_file(file: &SourceFile) -> io::Result<String> {
    full_crc32c(file.open_checked().map_err(io::Error::other)?)
}

/// [`composite_crc32c`] of the local file, read through [`SourceFile::open`].
pub(crate) fn composite_crc32c_file(file: &SourceFile, part_size: u64) -> io::Result<String> {
    composite_crc32c(file.open_checked().map_err(io::Error::other)?, part_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_matches_the_crc32c_check_value() {
        // The CRC-32C catalogue check value of "123456789" is 0xE3069283.
        assert_eq!(full_crc32c(&b"123456789"[..]).unwrap(), encode(0xE306_9283));
        assert_eq!(full_crc32c(&b""[..]).unwrap(), "AAAAAA==");
        assert_eq!(crc32c_of(b"123456789"), encode(0xE306_9283));
        assert_eq!(crc32c_of(b""), "AAAAAA==");
        let big = vec![7u8; READ_BUF * 3 + 5];
        assert_eq!(
            full_crc32c(&big[..]).unwrap(),
            encode(crc_fast::crc32_iscsi(&big))
        );
    }

    #[test]
    fn composite_is_the_crc_of_the_part_crcs() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let part = 4096u64;
        let mut concat = Vec::new();
        for chunk in data.chunks(part as usize) {
            concat.extend_from_slice(&crc_fast::crc32_iscsi(chunk).to_be_bytes());
        }
        let expected = format!("{}-3", encode(crc_fast::crc32_iscsi(&concat)));
        assert_eq!(composite_crc32c(&data[..], part).unwrap(), expected);
        // An exact multiple of the part size has no empty trailing part.
        assert!(composite_crc32c(&data[..8192], part)
            .unwrap()
            .ends_with("-2"));
        assert!(composite_crc32c(&b""[..], part).unwrap().ends_with("-1"));
        assert_eq!(composite_parts(&expected), Some(3));
        assert_eq!(composite_parts("AAAAAA=="), None);
    }

    #[test]
    fn matches_an_independent_implementation() {
        // Values computed by a bit-by-bit table CRC32C (Python) for 12 MiB + 5 bytes in
        // 5 MiB parts: whole object, and composite as S3 forms it for a 3-part upload.
        let data: Vec<u8> = (0..12 * 1024 * 1024 + 5u32)
            .map(|i| (i.wrapping_mul(31) % 251) as u8)
            .collect();
        assert_eq!(full_crc32c(&data[..]).unwrap(), "UXdpuw==");
        assert_eq!(
            composite_crc32c(&data[..], 5 * 1024 * 1024).unwrap(),
            "oIGqMQ==-3"
        );
    }
}
