//! What counts as a phone number or e-mail address, checked before a message
//! goes anywhere, so a bad destination is a clear error rather than a
//! gateway's puzzling refusal.

/// The fewest and most digits of an MSISDN in international form.
pub const MSISDN_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// An MSISDN: 7 to 15 digits in international form (country code first),
/// optionally with a leading `+`, e.g. `2348022000008`.
pub fn check_msisdn(to: &str) -> Result<(), &'static str> {
    let digits = to.strip_prefix('+').unwrap_or(to);
    if MSISDN_DIGITS.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("must be 7 to 15 digits in international form, such as 2348022000008")
    }
}

/// A bare e-mail address (`local@domain`, no display name), as SMTP's
/// `RCPT TO` needs it.
pub fn check_email_address(to: &str) -> Result<(), &'static str> {
    to.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|_| "must be an e-mail address such as uju@example.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msisdns() {
        for good in [
            "2348022000008",
            "+2348022000008",
            "1234567",
            "123456789012345",
        ] {
            assert!(check_msisdn(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "+",
            "123456",
            "1234567890123456",
            "234 802 200 0008",
            "234-8022000008",
            "++2348022000008",
            "２３４８０２２０００００８",
        ] {
            assert!(check_msisdn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_addresses() {
        for good in ["uju@example.com", "a.b+tag@sub.example.ng"] {
            assert!(check_email_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "uju",
            "uju@",
            "@example.com",
            "Uju <uju@example.com>",
            "uju@example.com\r\nBcc: x@example.com",
            "a b@example.com",
        ] {
            assert!(check_email_address(bad).is_err(), "{bad:?}");
        }
    }
}
