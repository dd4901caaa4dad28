//! The languages a client may ask for: Whisper's language codes (the multilingual models up to
//! v2, whose tokenizers have a `<|code|>` token for each).

/// Whisper's language codes, in Whisper's order.
pub const WHISPER_LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su",
];

/// Whether `code` is one of [`WHISPER_LANGUAGES`].
pub fn is_whisper_language(code: &str) -> bool {
    WHISPER_LANGUAGES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whispers_ninety_nine_languages_are_known_once_each() {
        let mut codes = WHISPER_LANGUAGES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 99);
        let cases = [
            ("en", true),
            ("haw", true),
            ("jw", true),
            ("xx", false),
            ("EN", false),
        ];
        for (code, known) in cases {
            assert_eq!(is_whisper_language(code), known, "{code}");
        }
    }
}
