//! Packing of integer weight codes at 2, 4, 8 or 16 bits, least significant bits first.
//!
//! A `b`-bit code `n` is stored as its `b`-bit two's complement (signed tensors) or as is
//! (unsigned tensors). At 2 and 4 bits, code `i` occupies bits `(i·b) mod 8 ..` of byte
//! `(i·b) / 8` (the first code in the lowest bits, as ONNX packs int4); at 8 bits one byte per
//! code; at 16 bits two little-endian bytes per code. The last byte of a 2- or 4-bit tensor is
//! padded with zero bits.

/// Bit widths that are stored as integer codes (32-bit tensors stay `f32`).
pub const CODE_BITS: [u32; 4] = [2, 4, 8, 16];

/// The integer grid of a `bits`-bit quantizer (spec §1.6): `-(2^(b−1)−1) ..= 2^(b−1)−1` when
/// signed (no `−2^(b−1)` level), `0 ..= 2^b − 1` when unsigned.
pub fn code_range(bits: u32, signed: bool) -> (i64, i64) {
    if signed {
        let m = (1i64 << (bits - 1)) - 1;
        (-m, m)
    } else {
        (0, (1i64 << bits) - 1)
    }
}

/// Bytes that `len` codes of `bits` bits take.
pub fn packed_len(len: usize, bits: u32) -> usize {
    (len * bits as usize).div_ceil(8)
}

/// Packs codes (each inside [`code_range`]) at `bits` ∈ {2, 4, 8, 16}. Codes outside the grid
/// are truncated to their low `bits` bits, so callers check the range first.
pub fn pack(codes: &[i32], bits: u32) -> Vec<u8> {
    assert!(CODE_BITS.contains(&bits), "pack: {bits} bits");
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    match bits {
        16 => {
            for (chunk, &c) in out.chunks_exact_mut(2).zip(codes) {
                chunk.copy_from_slice(&(c as u16).to_le_bytes());
            }
        }
        8 => {
            for (o, &c) in out.iter_mut().zip(codes) {
                *o = c as u8;
            }
        }
        _ => {
            let mask = (1u32 << bits) - 1;
            let b = bits as usize;
            for (i, &c) in codes.iter().enumerate() {
                let bit = i * b;
                out[bit / 8] |= (((c as u32) & mask) << (bit % 8)) as u8;
            }
        }
    }
    out
}

/// Inverse of [`pack`]: `len` codes, sign-extended when `signed`. `None` when `bytes` does not
/// hold exactly [`packed_len`] bytes.
pub fn unpack(bytes: &[u8], len: usize, bits: u32, signed: bool) -> Option<Vec<i32>> {
    if !CODE_BITS.contains(&bits) || bytes.len() != packed_len(len, bits) {
        return None;
    }
    let extend = |v: u32| -> i32 {
        if signed {
            let shift = 32 - bits;
            ((v << shift) as i32) >> shift
        } else {
            v as i32
        }
    };
    Some(match bits {
        16 => bytes
            .chunks_exact(2)
            .map(|c| extend(u32::from(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        8 => bytes.iter().map(|&v| extend(u32::from(v))).collect(),
        _ => {
            let mask = (1u32 << bits) - 1;
            let b = bits as usize;
            (0..len)
                .map(|i| {
                    let bit = i * b;
                    extend((u32::from(bytes[bit / 8]) >> (bit % 8)) & mask)
                })
                .collect()
        }
    })
}

/// The `b`-bit integer code of one element from its residual stage integers `k2, k4, …`
/// (spec §1.5–1.6): `n4 = 5·k2 + k4`, `n8 = 17·n4 + k8`, `n16 = 257·n8 + k16`,
/// `n32 = 65537·n16 + k32`, so that the quantized value is `s_b · n_b`.
pub fn code_from_stages(k: &[f32]) -> i64 {
    const FACTORS: [i64; 5] = [1, 5, 17, 257, 65537];
    let mut n = 0i64;
    for (b, &kb) in k.iter().enumerate() {
        n = n * FACTORS[b] + kb as i64;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_width() {
        for bits in CODE_BITS {
            for signed in [true, false] {
                let (lo, hi) = code_range(bits, signed);
                // Every level (or a strided sweep at 16 bits) and odd lengths.
                let step = ((hi - lo) / 1000).max(1);
                let codes: Vec<i32> = (lo..=hi).step_by(step as usize).map(|v| v as i32).collect();
                for len in [codes.len(), codes.len().saturating_sub(1), 1, 3] {
                    let c = &codes[..len.min(codes.len())];
                    let bytes = pack(c, bits);
                    assert_eq!(bytes.len(), packed_len(c.len(), bits));
                    assert_eq!(
                        unpack(&bytes, c.len(), bits, signed).unwrap(),
                        c,
                        "{bits} {signed}"
                    );
                }
            }
        }
    }

    #[test]
    fn layout_is_lsb_first() {
        assert_eq!(pack(&[1, -1, 0, 1], 2), vec![0b01_00_11_01]);
        assert_eq!(pack(&[-7, 7, 3], 4), vec![0x79, 0x03]);
        assert_eq!(pack(&[-2], 16), vec![0xfe, 0xff]);
        assert_eq!(unpack(&[0x79, 0x03], 3, 4, true).unwrap(), vec![-7, 7, 3]);
        assert!(unpack(&[0x79], 3, 4, true).is_none());
    }

    #[test]
    fn stages_compose() {
        assert_eq!(code_from_stages(&[1.0]), 1);
        assert_eq!(code_from_stages(&[1.0, 2.0]), 7);
        assert_eq!(code_from_stages(&[-1.0, -2.0, -8.0]), -127);
        assert_eq!(code_from_stages(&[1.0, 2.0, 8.0, 128.0]), 32767);
        assert_eq!(code_from_stages(&[3.0, 0.0, 0.0]), 255);
    }
}
