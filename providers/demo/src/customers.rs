//! The demo bank's customers: the phone and e-mail it has on record for each
//! account, where its OTPs go.
//!
//! Seed 003: "send an OTP to the phone number attached to the source". A
//! code sent wherever the calling app said would prove only that somebody
//! at a number the app chose saw it; sent to the holder on record, it
//! proves the holder agrees. The registry is seeded from the bank's
//! settings ([`DemoConfig`]); an account the bank opens on first sight
//! belongs to its demo customer ([`Holder::demo_customer`]) unless the
//! settings name another `first_sight` holder.

use std::collections::HashMap;

use manifold_provider_sdk::Contact;
use serde::Deserialize;

/// The demo customer's phone: the holder of every account the bank opens
/// on first sight, unless its settings say otherwise.
pub const DEMO_CUSTOMER_MOBILE: &str = "2348022000008";
/// The demo customer's e-mail.
pub const DEMO_CUSTOMER_EMAIL: &str = "uju@example.com";

/// A customer as the bank has them on record.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// An MSISDN (country code, no `+`): codes go here by SMS.
    #[serde(default)]
    pub mobile_no: Option<String>,
    /// Codes go here by e-mail when there is no phone on record.
    #[serde(default)]
    pub email: Option<String>,
}

/// Phone numbers and e-mail addresses are customer data: printed masked.
impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("contact", &self.contact().map(|contact| contact.shown))
            .finish()
    }
}

impl Holder {
    pub fn demo_customer() -> Holder {
        Holder {
            mobile_no: Some(DEMO_CUSTOMER_MOBILE.to_owned()),
            email: Some(DEMO_CUSTOMER_EMAIL.to_owned()),
        }
    }

    /// Where codes go: the phone, else the e-mail.
    pub fn contact(&self) -> Option<Contact> {
        match (&self.mobile_no, &self.email) {
            (Some(mobile), _) => Some(Contact::sms(mobile.clone())),
            (None, Some(email)) => Some(Contact::email(email.clone())),
            (None, None) => None,
        }
    }

    fn check(&self, key: &str) -> Result<(), String> {
        if let Some(mobile) = &self.mobile_no {
            if !(8..=15).contains(&mobile.len()) || !mobile.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{key}.mobile_no must be 8 to 15 digits (country code first, no `+`)"
                ));
            }
        }
        if let Some(email) = &self.email {
            let plausible = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
            });
            if !plausible {
                return Err(format!(
                    "{key}.email must be an address such as uju@example.com"
                ));
            }
        }
        if self.mobile_no.is_none() && self.email.is_none() {
            return Err(format!("{key} needs a mobile_no or an email"));
        }
        Ok(())
    }
}

/// Every account's holder.
#[derive(Clone)]
pub struct Customers {
    by_account: HashMap<String, Holder>,
    first_sight: Holder,
}

/// Account numbers and contacts are customer data: only counted.
impl std::fmt::Debug for Customers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customers")
            .field("on_record", &self.by_account.len())
            .field("first_sight", &self.first_sight)
            .finish()
    }
}

impl Default for Customers {
    fn default() -> Self {
        Customers {
            by_account: HashMap::new(),
            first_sight: Holder::demo_customer(),
        }
    }
}

impl Customers {
    /// The holder of `account` (a bank account number or a wallet id).
    pub fn holder_of(&self, account: &str) -> &Holder {
        self.by_account.get(account).unwrap_or(&self.first_sight)
    }

    /// Where codes for `account` go. Every holder on record has a phone or
    /// an e-mail (checked when the settings are read), so the demo
    /// customer's phone only stands in for a registry built by hand.
    pub fn contact_of(&self, account: &str) -> Contact {
        self.holder_of(account)
            .contact()
            .unwrap_or_else(|| Contact::sms(DEMO_CUSTOMER_MOBILE))
    }
}

/// One customer of the settings' `customers` list (no `Debug`: it is
/// customer data).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerRecord {
    /// The bank account number or wallet id.
    account: String,
    #[serde(default)]
    mobile_no: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// The demo bank's settings, as a switch's `[providers.settings]` table or
/// the `demo-provider --settings` file holds them. Every key is optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    pub opening_balance: Option<u64>,
    pub step_up_amount: Option<u64>,
    pub otp_sends_per_destination_per_hour: Option<u32>,
    pub otp_sends_per_app_per_hour: Option<u32>,
    #[serde(default)]
    customers: Vec<CustomerRecord>,
    first_sight: Option<Holder>,
}

/// The customers are only counted: their accounts and phones are
/// customer data.
impl std::fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoConfig")
            .field("opening_balance", &self.opening_balance)
            .field("step_up_amount", &self.step_up_amount)
            .field(
                "otp_sends_per_destination_per_hour",
                &self.otp_sends_per_destination_per_hour,
            )
            .field(
                "otp_sends_per_app_per_hour",
                &self.otp_sends_per_app_per_hour,
            )
            .field("customers", &self.customers.len())
            .field("first_sight", &self.first_sight)
            .finish()
    }
}

impl DemoConfig {
    /// The customers it names, checked: every problem is reported with its
    /// key, and none quotes a phone number or address.
    pub fn customers(&self) -> Result<Customers, String> {
        let mut registry = Customers::default();
        if let Some(first_sight) = &self.first_sight {
            first_sight.check("first_sight")?;
            registry.first_sight = first_sight.clone();
        }
        for (i, record) in self.customers.iter().enumerate() {
            let holder = Holder {
                mobile_no: record.mobile_no.clone(),
                email: record.email.clone(),
            };
            holder.check(&format!("customers[{i}]"))?;
            if record.account.trim().is_empty() {
                return Err(format!("customers[{i}].account must name an account"));
            }
            if registry
                .by_account
                .insert(record.account.clone(), holder)
                .is_some()
            {
                return Err(format!("customers[{i}].account is listed more than once"));
            }
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> DemoConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn accounts_on_record_have_their_holder_and_others_the_first_sight_one() {
        let customers = config(
            r#"
            customers = [
                { account = "0123456789", mobile_no = "2348033333333" },
                { account = "wallet-7", email = "ada@example.com" },
            ]
            "#,
        )
        .customers()
        .unwrap();
        assert_eq!(
            customers.holder_of("0123456789").contact(),
            Some(Contact::sms("2348033333333"))
        );
        assert_eq!(
            customers.holder_of("wallet-7").contact(),
            Some(Contact::email("ada@example.com"))
        );
        assert_eq!(
            customers.holder_of("5555555555").contact(),
            Some(Contact::sms(DEMO_CUSTOMER_MOBILE))
        );
        let other = config(r#"first_sight = { email = "bank@example.com" }"#)
            .customers()
            .unwrap();
        assert_eq!(
            other.holder_of("5555555555").contact(),
            Some(Contact::email("bank@example.com"))
        );
    }

    #[test]
    fn bad_records_are_named_without_their_values() {
        for (text, needle) in [
            (
                r#"customers = [{ account = "1", mobile_no = "+234 80" }]"#,
                "customers[0].mobile_no",
            ),
            (
                r#"customers = [{ account = "1", email = "nobody" }]"#,
                "customers[0].email",
            ),
            (
                r#"customers = [{ account = "1" }]"#,
                "customers[0] needs a mobile_no or an email",
            ),
            (
                r#"customers = [{ account = " ", email = "a@b.c" }]"#,
                "customers[0].account",
            ),
            (
                r#"customers = [{ account = "1", email = "a@b.c" }, { account = "1", email = "d@e.f" }]"#,
                "customers[1].account is listed more than once",
            ),
            (
                r#"first_sight = { mobile_no = "12" }"#,
                "first_sight.mobile_no",
            ),
        ] {
            let error = config(text).customers().unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
            assert!(
                !error.contains("+234") && !error.contains("nobody"),
                "{error}"
            );
        }
        assert!(toml::from_str::<DemoConfig>("colour = 1").is_err());
    }

    #[test]
    fn a_holder_never_prints_in_clear() {
        let printed = format!("{:?}", Holder::demo_customer());
        assert!(!printed.contains(DEMO_CUSTOMER_MOBILE), "{printed}");
    }
}
