//! `[billing]`: the fee schedule invoices are priced from (the fee model is
//! `manifold-billing`'s). Money is written as a string (`"0.50"`) or a
//! whole number: a TOML float cannot hold it exactly, so one is refused.

use std::collections::{BTreeMap, BTreeSet};

use manifold_billing::{Decimal, Fee, FeeSchedule};
use serde::Deserialize;

use crate::{is_identifier, Problems};

/// The most minor units a currency has (ISO 4217 has none above 4).
const MAX_MINOR_UNITS: u32 = 4;
/// The largest fee, minimum or cap (in units): far above any real one, and
/// small enough that every fee fits a count of minor units.
const MAX_MONEY: u64 = 1_000_000_000_000;
/// The most decimal places a percentage may have.
const MAX_PERCENT_PLACES: u32 = 6;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBilling {
    currency: String,
    minor_units: Option<u32>,
    bill_failed: Option<bool>,
    bill_rejected: Option<bool>,
    bill_repeats: Option<bool>,
    default: Option<RawFee>,
    #[serde(default)]
    fees: BTreeMap<String, RawFee>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFee {
    per_call: Option<toml::Value>,
    percent: Option<toml::Value>,
    minimum: Option<toml::Value>,
    cap: Option<toml::Value>,
}

impl RawBilling {
    /// `services`: every `request_type` some provider offers; a fee for any
    /// other is a typo that would leave its calls at the default fee.
    pub(crate) fn validate(
        self,
        services: &BTreeSet<String>,
        problems: &mut Problems,
    ) -> FeeSchedule {
        let currency_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            problems.add(
                "billing.currency",
                "must be an ISO 4217 code: three capital letters such as NGN",
            );
        }
        let minor_units = self.minor_units.unwrap_or(2);
        if minor_units > MAX_MINOR_UNITS {
            problems.add(
                "billing.minor_units",
                format!("must be between 0 and {MAX_MINOR_UNITS} (2 for kobo or cents)"),
            );
        }
        let minor_units = minor_units.min(MAX_MINOR_UNITS);
        let default_fee = match self.default {
            Some(raw) => raw.validate("billing.default", minor_units, problems),
            None => Fee::default(),
        };
        let mut fees = BTreeMap::new();
        for (service, raw) in self.fees {
            let key = format!("billing.fees.{service}");
            if !is_identifier(&service) {
                problems.add(&key, "is not a request_type name");
            } else if !services.contains(&service) {
                problems.add(
                    &key,
                    "no provider offers this request_type; its calls would be priced by \
                     `billing.default` instead",
                );
            }
            let fee = raw.validate(&key, minor_units, problems);
            fees.insert(service, fee);
        }
        FeeSchedule {
            currency: self.currency,
            minor_units,
            bill_failed: self.bill_failed.unwrap_or(true),
            bill_rejected: self.bill_rejected.unwrap_or(true),
            bill_repeats: self.bill_repeats.unwrap_or(true),
            fees,
            default_fee,
        }
    }
}

impl RawFee {
    fn validate(self, key: &str, minor_units: u32, problems: &mut Problems) -> Fee {
        let mut money = |name: &str, value: Option<toml::Value>, places: u32| {
            let value = value?;
            let key = format!("{key}.{name}");
            match decimal(&value) {
                Err(problem) => {
                    problems.add(key, problem);
                    None
                }
                Ok(amount) if amount.is_sign_negative() && !amount.is_zero() => {
                    problems.add(key, "must not be negative");
                    None
                }
                Ok(amount) if amount > Decimal::from(MAX_MONEY) => {
                    problems.add(key, format!("must be at most {MAX_MONEY}"));
                    None
                }
                Ok(amount) if amount.normalize().scale() > places => {
                    problems.add(key, format!("has more than {places} decimal places"));
                    None
                }
                Ok(amount) => Some(amount),
            }
        };
        let per_call = money("per_call", self.per_call, minor_units);
        let percent = money("percent", self.percent, MAX_PERCENT_PLACES);
        let minimum = money("minimum", self.minimum, minor_units);
        let cap = money("cap", self.cap, minor_units);
        if percent.is_some_and(|p| p > Decimal::ONE_HUNDRED) {
            problems.add(format!("{key}.percent"), "must be at most 100");
        }
        let charges_percent = percent.is_some_and(|p| !p.is_zero());
        if !charges_percent && (minimum.is_some() || cap.is_some()) {
            problems.add(
                key,
                "`minimum` and `cap` bound the percentage fee; set `percent` too",
            );
        }
        if let (Some(minimum), Some(cap)) = (minimum, cap) {
            if cap < minimum {
                problems.add(format!("{key}.cap"), "must not be below `minimum`");
            }
        }
        Fee {
            per_call: per_call.unwrap_or_default(),
            percent: percent.unwrap_or_default(),
            minimum: minimum.unwrap_or_default(),
            cap,
        }
    }
}

fn decimal(value: &toml::Value) -> Result<Decimal, String> {
    match value {
        toml::Value::String(text) => Decimal::from_str_exact(text.trim())
            .map_err(|_| "is not a decimal number such as \"0.50\"".to_owned()),
        toml::Value::Integer(whole) => Ok(Decimal::from(*whole)),
        toml::Value::Float(_) => Err(
            "is a TOML float, which cannot hold money exactly; write it as a string such as \"0.50\""
                .to_owned(),
        ),
        _ => Err("must be a decimal number written as a string, such as \"0.50\"".to_owned()),
    }
}
