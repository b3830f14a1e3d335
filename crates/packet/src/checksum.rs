//! Internet checksums (RFC 1071) and incremental updates (RFC 1624) for header rewrites.
//!
//! Owns checksum arithmetic only; callers decide which bytes to rewrite.

/// One's-complement sum of `data` folded into 16 bits, starting from `initial`.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !(ones_complement_sum(data, 0) as u16)
}

/// Incrementally updates checksum `old_ck` when a 16-bit word changes from `old` to `new` (RFC 1624 eq. 3).
pub fn update16(old_ck: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!old_ck) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Incrementally updates a checksum for a changed run of bytes of equal length and
/// even alignment (e.g. an IPv4 or IPv6 address).
pub fn update_bytes(mut ck: u16, old: &[u8], new: &[u8]) -> u16 {
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        let ow = u16::from_be_bytes([o[0], o.get(1).copied().unwrap_or(0)]);
        let nw = u16::from_be_bytes([n[0], n.get(1).copied().unwrap_or(0)]);
        ck = update16(ck, ow, nw);
    }
    ck
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2u16);
    }

    proptest! {
        #[test]
        fn incremental_equals_recompute(mut data in proptest::collection::vec(any::<u8>(), 2..64), word in 0usize..31, new: u16) {
            let w = (word * 2) % (data.len() & !1).max(2);
            prop_assume!(w + 1 < data.len());
            let ck = checksum(&data);
            let old = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update16(ck, old, new);
            let full = checksum(&data);
            // 0x0000 and 0xffff are the same value in one's complement.
            prop_assert!(inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff));
        }
    }
}
