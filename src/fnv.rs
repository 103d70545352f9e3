//! FNV-1a (64 bit): a hash that is the same in every process, on every platform and with every
//! Rust version, unlike the standard hasher. What must agree across processes hashes with it:
//! lock keys, notification channels, partitions of projectors, snapshot fingerprints.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    extend(OFFSET, bytes)
}

/// `hash` continued with `bytes`.
pub(crate) fn extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_of_fnv_1a() {
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(extend(hash(b"fo"), b"obar"), hash(b"foobar"));
    }
}
