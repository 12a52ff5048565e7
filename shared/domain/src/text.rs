use super::Invalid;

/// Free text from a client: trimmed, with a character count in `min..=max` and no control characters
/// other than newlines and tabs.
pub fn parse_text(raw: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let text = raw.trim();
    let count = text.chars().count();
    if count < min {
        return Err(Invalid::new(if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters")
        }));
    }
    if count > max {
        return Err(Invalid::new(format!("must be at most {max} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(parse_text("  Mug ", 1, 10).unwrap(), "Mug");
        assert!(parse_text("   ", 1, 10).is_err());
        assert!(parse_text("abcdefghijk", 1, 10).is_err());
        assert!(parse_text("a\u{0}b", 1, 10).is_err());
        assert_eq!(parse_text("", 0, 10).unwrap(), "");
    }
}
