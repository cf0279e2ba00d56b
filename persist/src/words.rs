//! Bytes tested eight at a time, in a `u64` (little-endian): the SQL text protocol's quoting
//! (`store::text_protocol`) and the API's JSON string scan (`kuota_api::domain`) both ask of
//! every byte of a text whether it is below a bound or equal to a byte.

/// Every byte of a word set to `byte`.
const fn repeated(byte: u8) -> u64 {
    0x0101_0101_0101_0101 * byte as u64
}

/// The high bit set in each byte of `word` below `bound` (at most 0x80), and maybe in bytes
/// above one of those: a byte below it borrows in the subtraction and sets its high bit, which
/// `!word` keeps only if the byte had it clear; a borrow carried on into the bytes above can only
/// follow a byte that was below. So whether the word has such a byte is exact, and so is the
/// lowest flagged byte, which is the first such byte ("Bit Twiddling Hacks", `hasless`; the
/// callers' tests hold it to the bytewise rule).
pub const fn bytes_below(word: u64, bound: u8) -> u64 {
    word.wrapping_sub(repeated(bound)) & !word & repeated(0x80)
}

/// `bytes_below` for the bytes of `word` equal to `byte`: the zero bytes of their difference.
pub const fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ repeated(byte), 1)
}
