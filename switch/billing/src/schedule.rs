//! The host's prices, and what one call costs under them.

use std::collections::BTreeMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::invoice::Call;

/// ISO 4217's code for "no currency": the currency of invoices of a host
/// that set no `[billing]` (every call counted, none priced).
pub const UNPRICED_CURRENCY: &str = "XXX";

/// The price of one service's calls. See the crate's fee model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fee {
    /// Charged on every billable call.
    pub per_call: Decimal,
    /// Of the amount, on the call that completed a transaction; 0 for none.
    pub percent: Decimal,
    /// The least a value fee is, when one is charged.
    pub minimum: Decimal,
    /// The most a value fee is.
    pub cap: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeSchedule {
    /// ISO 4217 code of the fees and of the amounts they are a percentage of.
    pub currency: String,
    /// How many minor units (as `amount` is given in) make one unit: 2 for
    /// kobo and cents, 0 for yen.
    pub minor_units: u32,
    /// Whether calls the provider answered `Failed` (a decline: HTTP 200)
    /// pay `per_call`.
    pub bill_failed: bool,
    /// Whether calls the switch refused with a 4xx (a bad field, a limit, an
    /// unknown transaction) pay `per_call`.
    pub bill_rejected: bool,
    /// Whether a repeat of a `request_ref` (answered again from the store)
    /// pays `per_call`. Never a value fee: the value moved once.
    pub bill_repeats: bool,
    /// By `request_type`.
    pub fees: BTreeMap<String, Fee>,
    /// Any other `request_type`, and calls rejected before it was known.
    pub default_fee: Fee,
}

impl Default for FeeSchedule {
    /// Every call counted and none priced.
    fn default() -> Self {
        FeeSchedule {
            currency: UNPRICED_CURRENCY.to_owned(),
            minor_units: 2,
            bill_failed: true,
            bill_rejected: true,
            bill_repeats: true,
            fees: BTreeMap::new(),
            default_fee: Fee::default(),
        }
    }
}

/// What one call costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Charge {
    pub billed: bool,
    pub call_fee: Decimal,
    pub value_fee: Decimal,
    /// The completed transaction's amount in units (0 unless completed).
    pub value: Decimal,
}

/// What a call was priced at when it was made, in the currency's minor
/// units: stored with the call, so an invoice is priced by the fees in force
/// when each call was made, not by those in force when the invoice is asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Price {
    pub currency: String,
    pub minor_units: u32,
    pub billed: bool,
    pub call_fee: u64,
    pub value_fee: u64,
}

impl Price {
    pub(crate) fn charge(&self, call: &Call<'_>) -> Charge {
        let units = |minor: u64| Decimal::from_i128_with_scale(i128::from(minor), self.minor_units);
        Charge {
            billed: self.billed,
            call_fee: units(self.call_fee),
            value_fee: units(self.value_fee),
            value: match (call.completed, call.repeat, call.amount) {
                (true, false, Some(amount)) if self.billed => units(amount),
                _ => Decimal::ZERO,
            },
        }
    }
}

impl FeeSchedule {
    /// What `call` costs under this schedule, to store with it.
    pub fn price(&self, call: &Call<'_>) -> Price {
        let charge = self.charge(call);
        let scale = Decimal::from(10u64.pow(self.minor_units));
        // Every fee is a whole number of minor units (the config allows no
        // finer `per_call`, `minimum` or `cap`, and value fees are rounded);
        // one past u64 is out of any real range and saturates.
        let minor = |fee: Decimal| (fee * scale).trunc().to_u64().unwrap_or(u64::MAX);
        Price {
            currency: self.currency.clone(),
            minor_units: self.minor_units,
            billed: charge.billed,
            call_fee: minor(charge.call_fee),
            value_fee: minor(charge.value_fee),
        }
    }

    pub fn fee_for(&self, request_type: Option<&str>) -> &Fee {
        request_type
            .and_then(|service| self.fees.get(service))
            .unwrap_or(&self.default_fee)
    }

    /// Whether `call` pays anything at all (see the crate's fee model).
    pub fn is_billable(&self, call: &Call<'_>) -> bool {
        let refused = (400..500).contains(&call.http_status);
        let declined = !refused && call.status == "Failed";
        call.http_status < 500
            && (!refused || self.bill_rejected)
            && (!declined || self.bill_failed)
            && (!call.repeat || self.bill_repeats)
    }

    /// An amount in minor units, in units: exact.
    pub fn in_units(&self, minor: u64) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(minor), self.minor_units)
    }

    pub(crate) fn charge(&self, call: &Call<'_>) -> Charge {
        if !self.is_billable(call) {
            return Charge::default();
        }
        let fee = self.fee_for(call.request_type);
        let mut charge = Charge {
            billed: true,
            call_fee: fee.per_call,
            ..Charge::default()
        };
        if let (true, false, Some(amount)) = (call.completed, call.repeat, call.amount) {
            charge.value = self.in_units(amount);
            if !fee.percent.is_zero() {
                charge.value_fee = self.value_fee(fee, charge.value);
            }
        }
        charge
    }

    /// `percent` of `value`, within `[minimum, cap]`, to the minor unit.
    fn value_fee(&self, fee: &Fee, value: Decimal) -> Decimal {
        // `value` is below 2^64 minor units and `percent` at most 100, so
        // neither step can leave a decimal's range.
        let raw = value * fee.percent / Decimal::ONE_HUNDRED;
        let mut bounded = raw.max(fee.minimum);
        if let Some(cap) = fee.cap {
            bounded = bounded.min(cap);
        }
        bounded.round_dp_with_strategy(self.minor_units, RoundingStrategy::MidpointAwayFromZero)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn schedule() -> FeeSchedule {
        FeeSchedule {
            currency: "NGN".into(),
            minor_units: 2,
            bill_failed: false,
            bill_rejected: true,
            bill_repeats: true,
            fees: BTreeMap::from([(
                "transfer_funds".to_owned(),
                Fee {
                    per_call: d("5.00"),
                    percent: d("0.5"),
                    minimum: d("10.00"),
                    cap: Some(d("1000.00")),
                },
            )]),
            default_fee: Fee {
                per_call: d("1.00"),
                ..Fee::default()
            },
        }
    }

    fn transfer(amount: u64) -> Call<'static> {
        Call {
            request_type: Some("transfer_funds"),
            operation: "transact",
            provider: Some("bank"),
            status: "Successful",
            http_status: 200,
            amount: Some(amount),
            repeat: false,
            completed: true,
            price: None,
        }
    }

    #[test]
    fn a_value_fee_is_a_percentage_within_its_minimum_and_cap() {
        let schedule = schedule();
        // 0.5 % of 5,000.00 is 25.00.
        let charge = schedule.charge(&transfer(500_000));
        assert_eq!((charge.call_fee, charge.value_fee), (d("5.00"), d("25.00")));
        assert_eq!(charge.value, d("5000.00"));
        // 0.5 % of 100.00 is 0.50, raised to the minimum.
        assert_eq!(schedule.charge(&transfer(10_000)).value_fee, d("10.00"));
        // 0.5 % of 1,000,000.00 is 5,000.00, held at the cap.
        assert_eq!(
            schedule.charge(&transfer(100_000_000)).value_fee,
            d("1000.00")
        );
        // 0.5 % of 2,345.67 is 11.72835: half away from zero at the kobo.
        assert_eq!(schedule.charge(&transfer(234_567)).value_fee, d("11.73"));
        // And of the largest amount the wire carries, without overflow.
        let huge = schedule.charge(&transfer(u64::MAX));
        assert_eq!(huge.value, d("184467440737095516.15"));
        assert_eq!(huge.value_fee, d("1000.00"));
    }

    #[test]
    fn only_the_completing_call_pays_a_value_fee() {
        let schedule = schedule();
        let waiting = Call {
            status: "WaitingForOTP",
            completed: false,
            ..transfer(500_000)
        };
        assert_eq!(
            (
                schedule.charge(&waiting).value_fee,
                schedule.charge(&waiting).call_fee
            ),
            (Decimal::ZERO, d("5.00"))
        );
        let repeat = Call {
            repeat: true,
            ..transfer(500_000)
        };
        let charge = schedule.charge(&repeat);
        assert_eq!(
            (charge.call_fee, charge.value_fee),
            (d("5.00"), Decimal::ZERO)
        );
    }

    #[test]
    fn failures_server_errors_and_repeats_follow_the_schedule() {
        let mut schedule = schedule();
        let declined = Call {
            status: "Failed",
            completed: false,
            ..transfer(500_000)
        };
        let refused = Call {
            http_status: 422,
            ..declined
        };
        assert!(!schedule.is_billable(&declined));
        assert!(schedule.is_billable(&refused), "a refusal is not a decline");
        schedule.bill_rejected = false;
        assert!(!schedule.is_billable(&refused));
        schedule.bill_failed = true;
        assert!(schedule.is_billable(&declined));
        assert!(!schedule.is_billable(&refused));
        let unavailable = Call {
            http_status: 503,
            ..declined
        };
        assert!(!schedule.is_billable(&unavailable), "5xx is never billed");
        schedule.bill_repeats = false;
        assert!(!schedule.is_billable(&Call {
            repeat: true,
            ..transfer(1)
        }));
    }

    #[test]
    fn an_unlisted_service_or_none_pays_the_default_fee() {
        let schedule = schedule();
        assert_eq!(schedule.fee_for(Some("get_balance")).per_call, d("1.00"));
        assert_eq!(schedule.fee_for(None).per_call, d("1.00"));
        let rejected = Call {
            request_type: None,
            status: "Failed",
            http_status: 400,
            amount: None,
            completed: false,
            ..transfer(0)
        };
        // Refused before its service was known: the default fee.
        assert_eq!(schedule.charge(&rejected).call_fee, d("1.00"));
    }

    #[test]
    fn a_price_is_the_charge_in_minor_units() {
        let schedule = schedule();
        let price = schedule.price(&transfer(234_567));
        assert_eq!(
            price,
            Price {
                currency: "NGN".into(),
                minor_units: 2,
                billed: true,
                call_fee: 500,
                value_fee: 1_173,
            }
        );
        let charge = price.charge(&transfer(234_567));
        assert_eq!(charge, schedule.charge(&transfer(234_567)));
        let declined = Call {
            status: "Failed",
            completed: false,
            ..transfer(500_000)
        };
        assert!(!schedule.price(&declined).billed);
    }

    #[test]
    fn minor_units_follow_the_currency() {
        let yen = FeeSchedule {
            minor_units: 0,
            ..schedule()
        };
        assert_eq!(yen.in_units(1234), d("1234"));
        let dinar = FeeSchedule {
            minor_units: 3,
            ..schedule()
        };
        assert_eq!(dinar.in_units(1234), d("1.234"));
    }
}
