//! CRC32C in the form S3 shows it (base64 of the four big-endian bytes), sent with every PUT
//! and part so that the server checks the bytes it received and keeps the checksum.

use base64::Engine;

/// A CRC32C as S3 shows it: base64 of the big-endian bytes.
fn encode(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC32C of bytes in memory, as S3 shows it: sent with each PUT and part, because the
/// SDK (configured to add checksums only where an operation requires one) would otherwise
/// send the algorithm header without a value, which S3 refuses and s3s-fs ignores.
pub(crate) fn crc32c_of(bytes: &[u8]) -> String {
    encode(crc_fast::crc32_iscsi(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crc32c_check_value() {
        // The CRC-32C catalogue check value of "123456789" is 0xE3069283.
        assert_eq!(crc32c_of(b"123456789"), encode(0xE306_9283));
        assert_eq!(crc32c_of(b""), "AAAAAA==");
    }
}
