// This module includes the auto-generated SQL data from build.rs

// The keyword table and character map, generated upstream from libinjection's
// sqlparse_data.json.
include!("generated_data.rs");

// Additional helper functions can be added here
impl CharType {
    pub fn is_white(&self) -> bool {
        matches!(self, CharType::White)
    }
    
    pub fn is_word(&self) -> bool {
        matches!(self, CharType::Word | CharType::BWord)
    }
    
    pub fn is_string_start(&self) -> bool {
        matches!(self, CharType::String | CharType::BString | CharType::EString | 
                      CharType::NQString | CharType::QString | 
                      CharType::UString | CharType::XString)
    }
    
    pub fn is_operator(&self) -> bool {
        matches!(self, CharType::Op1 | CharType::Op2 | CharType::Unary)
    }
    
    pub fn is_number(&self) -> bool {
        matches!(self, CharType::Number)
    }
}

// Helper for getting character type
pub fn get_char_type(ch: u8) -> CharType {
    CHAR_MAP[ch as usize]
}
/// Whether some fingerprint in the table begins with the token class `first` (a fingerprint
/// letter, any case).
///
/// Portcullis: `SqliState::detect` stops folding a fingerprint whose first token is a final
/// operator when none begins with `o`; built from the table, so it never rules out a
/// fingerprint the lookup would find.
pub fn fingerprint_may_start_with_class(first: u8) -> bool {
    static FIRSTS: std::sync::LazyLock<[bool; 256]> = std::sync::LazyLock::new(|| {
        let mut firsts = [false; 256];
        for keyword in SQL_KEYWORDS.iter().filter(|keyword| keyword.token_type == b'F') {
            if let [b'0', first, ..] = keyword.word.as_bytes() {
                firsts[usize::from(first.to_ascii_uppercase())] = true;
            }
        }
        firsts
    });
    FIRSTS[usize::from(first.to_ascii_uppercase())]
}

/// Whether some fingerprint in the table begins with the two token classes `first` and
/// `second` (as fingerprint letters, any case).
///
/// Portcullis: `SqliState::detect` stops folding a fingerprint whose first two tokens are
/// final and begin none of the listed ones; built from the table, so it never rules out a
/// fingerprint the lookup would find.
pub fn fingerprint_may_start_with(first: u8, second: u8) -> bool {
    static PAIRS: std::sync::LazyLock<std::collections::HashSet<(u8, u8)>> =
        std::sync::LazyLock::new(|| {
            SQL_KEYWORDS
                .iter()
                .filter(|keyword| keyword.token_type == b'F')
                .filter_map(|keyword| match keyword.word.as_bytes() {
                    [b'0', first, second, ..] => {
                        Some((first.to_ascii_uppercase(), second.to_ascii_uppercase()))
                    }
                    _ => None,
                })
                .collect()
        });
    PAIRS.contains(&(first.to_ascii_uppercase(), second.to_ascii_uppercase()))
}
