//! Fixed-offset access to the binary records filters keep in shared data, without
//! indexing that could panic: out-of-range reads give zeros, out-of-range writes do
//! nothing (callers validate record sizes before decoding).

/// `N` bytes at `at`, or all zeros when the slice is too short.
pub fn read_array<const N: usize>(source: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(slice) = at.checked_add(N).and_then(|end| source.get(at..end)) {
        out.copy_from_slice(slice);
    }
    out
}

pub fn read_u32(source: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read_array(source, at))
}

pub fn read_u64(source: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read_array(source, at))
}

/// Copies `bytes` to `at`; nothing when it does not fit.
pub fn write_at(target: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(slice) = at
        .checked_add(bytes.len())
        .and_then(|end| target.get_mut(at..end))
    {
        slice.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn reads_and_writes_little_endian_in_bounds_only() {
        let mut record = [0u8; 12];
        write_at(&mut record, 4, &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(read_u64(&record, 4), 0x0102_0304_0506_0708);
        assert_eq!(read_u32(&record, 4), 0x0506_0708);
        assert_eq!(read_u64(&record, 8), 0, "too short: zeros");
        write_at(&mut record, 10, &[9, 9, 9]);
        assert_eq!(record[10..], [0x02, 0x01], "does not fit: untouched");
        assert_eq!(read_array::<2>(&record, usize::MAX), [0, 0]);
    }
}
