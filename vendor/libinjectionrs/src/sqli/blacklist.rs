// SQL injection blacklist checker - matches C implementation exactly

use super::sqli_data;

/// Check if a fingerprint is blacklisted
/// This matches libinjection_sqli_blacklist from the C version
pub fn is_blacklisted(fingerprint: &str) -> bool {
    is_blacklisted_bytes(fingerprint.as_bytes())
}

/// `is_blacklisted` on the fingerprint's bytes. Portcullis: the folding checks every
/// fingerprint it makes, and reading them as text first validated them as UTF-8 each time.
pub fn is_blacklisted_bytes(bytes: &[u8]) -> bool {
    // Match the C version: convert v0 fingerprint to v1 format
    // v0: up to 5 chars, mixed case  
    // v1: '0' prefix, up to 5 more chars, upper case
    
    if bytes.is_empty() {
        return false;
    }
    
    // Build the v1 fingerprint with '0' prefix and uppercase. Portcullis: in a stack buffer,
    // not a String; a fingerprint has at most 5 characters (8 bytes allowed for safety).
    if bytes.len() > 8 {
        return false;
    }
    let mut fp2 = [0u8; 9];
    fp2[0] = b'0';
    fp2[1..=bytes.len()].copy_from_slice(bytes);
    
    // Check if this fingerprint exists in the keywords table with type 'F'
    // (lookup_bytes folds case, as the C version's upper-casing did)
    sqli_data::lookup_bytes(&fp2[..=bytes.len()]) == crate::sqli::TokenType::Fingerprint
}
