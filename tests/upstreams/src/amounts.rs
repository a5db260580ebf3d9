//! Amounts as the REST simulations read them: a decimal in major units
//! (`"12.34"`, or the number `12.34` where an upstream takes numbers), at
//! most 12 whole digits and 2 decimals, above zero; kept as hundredths.

use serde_json::Value;

/// `"12.34"` → 1234; `None` for anything else (a sign, an exponent, three
/// decimals, `"1."`, zero).
pub fn hundredths(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 12 || fraction.len() > 2 {
        return None;
    }
    if text.contains('.') && !digits(fraction) {
        return None;
    }
    let total = whole.parse::<u64>().ok()? * 100 + format!("{fraction:0<2}").parse::<u64>().ok()?;
    (total > 0).then_some(total)
}

/// The amount's text in a JSON body: a string, or also a number when
/// `numbers` (serde_json writes `12.5` as `12.5`).
pub fn text_of(value: &Value, numbers: bool) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) if numbers => Some(number.to_string()),
        _ => None,
    }
}

/// Hundredths as the decimal the upstream answers with: 1234 → `"12.34"`.
pub fn decimal(hundredths: u64) -> String {
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_in_major_units_and_nothing_else() {
        assert_eq!(hundredths("12.34"), Some(1234));
        assert_eq!(hundredths("12.3"), Some(1230));
        assert_eq!(hundredths("7"), Some(700));
        for bad in [
            "0",
            "0.00",
            "1.",
            ".5",
            "-1",
            "1e3",
            "1.234",
            "",
            "1,00",
            "1234567890123",
        ] {
            assert_eq!(hundredths(bad), None, "{bad}");
        }
        assert_eq!(decimal(1234), "12.34");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(
            text_of(&serde_json::json!(12.5), true).as_deref(),
            Some("12.5")
        );
        assert_eq!(text_of(&serde_json::json!(12.5), false), None);
    }
}
