//! Short human codes (`K7Q2`) that people read over a phone line and type into an SMS.

use rand::Rng;

/// No 0/O, 1/I/L, 2/Z, 5/S, 8/B: characters that are confused when read aloud or handwritten.
const ALPHABET: &[u8] = b"ACDEFGHJKMNPQRTUVWXY34679";

/// A random code of `len` characters. Uniqueness among open incidents is the store's job.
pub fn generate(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Normalises what a person typed (`k7q2`) to a code, or None if it cannot be one.
pub fn normalise(input: &str) -> Option<String> {
    let up = input.trim().to_ascii_uppercase();
    (4..=8).contains(&up.len()).then_some(())?;
    up.bytes().all(|b| ALPHABET.contains(&b)).then_some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_normalise_to_themselves() {
        for _ in 0..100 {
            let c = generate(4);
            assert_eq!(normalise(&c.to_lowercase()).as_deref(), Some(c.as_str()));
        }
        assert_eq!(normalise("K0Q2"), None);
    }
}
