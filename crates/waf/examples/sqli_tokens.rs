//! `sqli_tokens FILE...`: prints, for every line of the files, libinjection's verdict (with the
//! fingerprint and folded tokens of a detected line), then the raw tokens in each of its three
//! quote contexts. Run on two builds of the vendored port (`vendor/libinjectionrs`) and `cmp`
//! the outputs: a change made for speed must leave every line identical. What `detect` leaves
//! behind for an undetected line is not printed: the folding may stop early there.

use std::io::{BufRead, BufWriter, Write};

use libinjectionrs::sqli::{SqliTokenizer, Token};
use libinjectionrs::{SqliFlags, SqliState};

/// The contexts `SqliState::detect` reads a value in: as-is, after `'` (ANSI) and after `"`
/// (MySQL).
const CONTEXTS: [u32; 3] = [0, (1 << 1) | (1 << 3), (1 << 2) | (1 << 4)];

fn main() -> std::io::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for path in std::env::args().skip(1) {
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        for line in file.split(b'\n') {
            let line = line?;
            let mut state = SqliState::new(&line, SqliFlags::FLAG_NONE);
            let detected = state.detect();
            write!(out, "{detected}")?;
            if detected {
                write!(out, " {:?} |", state.fingerprint)?;
                for token in &state.tokens {
                    write_token(&mut out, token)?;
                }
            }
            for context in CONTEXTS {
                write!(out, " ||")?;
                let mut tokenizer = SqliTokenizer::new(&line, SqliFlags::new(context));
                while let Some(token) = tokenizer.next_token() {
                    write_token(&mut out, token)?;
                }
            }
            writeln!(out)?;
        }
    }
    out.flush()
}

fn write_token(out: &mut impl Write, token: &Token) -> std::io::Result<()> {
    write!(
        out,
        " {:?}/{}/{}/{:?}/{}/{}/{}",
        token.token_type,
        token.pos,
        token.len,
        token.value(),
        token.str_open,
        token.str_close,
        token.count
    )
}
