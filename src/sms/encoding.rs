//! SMS text encodings (3GPP TS 23.038): the GSM 7-bit default alphabet with its extension
//! table, UCS-2 for everything else, and how many segments a text needs. The modem's PDU
//! encoder splits texts with these rules; `check-config` uses them to warn about long or
//! non-GSM texts.

/// The GSM 7-bit default alphabet, indexed by septet (3GPP TS 23.038 section 6.2.1).
const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: characters written as ESC (0x1B) and a second septet.
const GSM7_EXTENSION: [(char, u8); 10] = [
    ('\u{c}', 0x0a),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2f),
    ('[', 0x3c),
    ('~', 0x3d),
    (']', 0x3e),
    ('|', 0x40),
    ('€', 0x65),
];

const ESCAPE: u8 = 0x1b;

/// Septets in one unsegmented GSM-7 SMS, and per part when concatenated (a 6-octet UDH
/// takes 7 septets).
pub const GSM7_SINGLE: usize = 160;
pub const GSM7_PART: usize = 153;
/// UTF-16 code units in one UCS-2 SMS, and per part when concatenated.
pub const UCS2_SINGLE: usize = 70;
pub const UCS2_PART: usize = 67;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The septets of one character: one, two (escape + extension), or None if it is not in
/// the GSM alphabet.
pub fn gsm7_septets(c: char) -> Option<([u8; 2], usize)> {
    // ESC is a table entry but not a character a text may contain.
    if c != '\u{1b}'
        && let Some(index) = GSM7_BASIC.iter().position(|b| *b == c)
    {
        // The table has 128 entries, so the index fits in a septet.
        return Some(([index as u8, 0], 1));
    }
    GSM7_EXTENSION
        .iter()
        .find(|(e, _)| *e == c)
        .map(|(_, code)| ([ESCAPE, *code], 2))
}

/// The encoding a text needs.
pub fn encoding_of(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// A text cut into the pieces that each fit one SMS: GSM-7 septet strings or UCS-2 code
/// units. Escape sequences and surrogate pairs are never split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parts {
    Gsm7(Vec<Vec<u8>>),
    Ucs2(Vec<Vec<u16>>),
}

impl Parts {
    pub fn count(&self) -> usize {
        match self {
            Parts::Gsm7(parts) => parts.len(),
            Parts::Ucs2(parts) => parts.len(),
        }
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            Parts::Gsm7(_) => Encoding::Gsm7,
            Parts::Ucs2(_) => Encoding::Ucs2,
        }
    }
}

/// Splits a text into SMS parts in the encoding it needs.
pub fn split(text: &str) -> Parts {
    match encoding_of(text) {
        Encoding::Gsm7 => {
            let mut characters = Vec::new();
            for c in text.chars() {
                if let Some((septets, n)) = gsm7_septets(c) {
                    characters.push(septets[..n].to_vec());
                }
            }
            Parts::Gsm7(pack_units(characters, GSM7_SINGLE, GSM7_PART))
        }
        Encoding::Ucs2 => {
            let characters = text
                .chars()
                .map(|c| c.encode_utf16(&mut [0; 2]).to_vec())
                .collect();
            Parts::Ucs2(pack_units(characters, UCS2_SINGLE, UCS2_PART))
        }
    }
}

/// Groups per-character unit sequences into parts of at most `single` units if everything
/// fits, else of at most `part` units, keeping each character whole.
fn pack_units<T: Copy>(characters: Vec<Vec<T>>, single: usize, part: usize) -> Vec<Vec<T>> {
    let total: usize = characters.iter().map(Vec::len).sum();
    let limit = if total <= single { single } else { part };
    let mut parts: Vec<Vec<T>> = vec![Vec::new()];
    for units in characters {
        let fits = parts.last().is_some_and(|p| p.len() + units.len() <= limit);
        if !fits {
            parts.push(Vec::new());
        }
        if let Some(current) = parts.last_mut() {
            current.extend(units);
        }
    }
    parts
}

/// Packs septets into octets, least significant bit first (TS 23.038 section 6.1.2.1),
/// after `fill_bits` zero bits (used to align text after a User Data Header).
pub fn pack_septets(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let total_bits = fill_bits + septets.len() * 7;
    let mut octets = vec![0u8; total_bits.div_ceil(8)];
    for (i, septet) in septets.iter().enumerate() {
        let bit = fill_bits + i * 7;
        let value = u16::from(septet & 0x7f) << (bit % 8);
        octets[bit / 8] |= (value & 0xff) as u8;
        if let Some(next) = octets.get_mut(bit / 8 + 1) {
            *next |= (value >> 8) as u8;
        }
    }
    octets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_hellohello_as_ts_23_038_shows() {
        let septets: Vec<u8> = "hellohello"
            .chars()
            .map(|c| gsm7_septets(c).unwrap().0[0])
            .collect();
        assert_eq!(
            hex::encode_upper(pack_septets(&septets, 0)),
            "E8329BFD4697D9EC37"
        );
    }

    #[test]
    fn counts_segments_and_picks_the_encoding() {
        assert_eq!(split("123456").count(), 1);
        assert_eq!(split(&"a".repeat(160)).count(), 1);
        assert_eq!(split(&"a".repeat(161)).count(), 2);
        assert_eq!(split(&"a".repeat(306)).count(), 2);
        assert_eq!(split(&"a".repeat(307)).count(), 3);
        // The euro sign takes two septets.
        assert_eq!(split(&"€".repeat(80)).count(), 1);
        assert_eq!(split(&"€".repeat(81)).count(), 2);
        assert_eq!(encoding_of("Grüße"), Encoding::Gsm7);
        assert_eq!(encoding_of("Привет"), Encoding::Ucs2);
        assert_eq!(split(&"П".repeat(70)).count(), 1);
        assert_eq!(split(&"П".repeat(71)).count(), 2);
    }

    #[test]
    fn never_splits_an_escape_or_a_surrogate_pair() {
        let Parts::Gsm7(parts) = split(&format!("{}€{}", "a".repeat(152), "a".repeat(10))) else {
            panic!()
        };
        assert_eq!(parts[0].len(), 152);
        assert_eq!(parts[1][..2], [0x1b, 0x65]);
        let Parts::Ucs2(parts) = split(&format!("{}😀{}", "П".repeat(66), "П".repeat(5)))
        else {
            panic!()
        };
        assert_eq!(parts[0].len(), 66);
        assert_eq!(parts[1].len(), 7);
    }
}
