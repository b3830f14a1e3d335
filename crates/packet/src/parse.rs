//! Frame parser: link layer → IP → transport, filling [`Headers`]. Never panics.

use crate::headers::{Headers, LinkType};
use crate::malformed::Malformed;

/// Parses a frame. On failure returns the headers parsed so far and the reason.
pub fn parse(link: LinkType, data: &[u8]) -> Result<Headers, (Headers, Malformed)> {
    let _ = data;
    Err((Headers::empty(link), Malformed::UnsupportedLink))
}
