//! Summing priced calls into an invoice, and writing it as CSV or JSON.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};

use crate::schedule::{Charge, FeeSchedule, Price};
use crate::{BillingError, Period};

/// One metered call as billing sees it (names as on the wire: operations
/// `transact`, `validate`, `query`, `reverse`; statuses `Successful`,
/// `Failed`, `WaitingForOTP`, `PendingValidation`, `Pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub request_type: Option<&'a str>,
    pub operation: &'a str,
    pub provider: Option<&'a str>,
    /// The status the app was answered with.
    pub status: &'a str,
    pub http_status: u16,
    /// The transaction's amount in minor units, when the call reached one.
    pub amount: Option<u64>,
    pub repeat: bool,
    /// Its answer first made its transaction `Successful`.
    pub completed: bool,
    /// What it was priced at when it was made; a call metered before
    /// billing stored prices is priced by the invoice's schedule.
    pub price: Option<&'a Price>,
}

/// Which calls share an invoice line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LineKey {
    request_type: Option<String>,
    operation: String,
    provider: Option<String>,
    status: String,
}

#[derive(Debug, Clone, Default)]
struct Sums {
    calls: u64,
    billed_calls: u64,
    completed: u64,
    completed_value: Decimal,
    call_fees: Decimal,
    value_fees: Decimal,
}

impl Sums {
    /// One call's share.
    fn of(charge: &Charge, completed: bool) -> Sums {
        Sums {
            calls: 1,
            billed_calls: u64::from(charge.billed),
            completed: u64::from(completed),
            completed_value: charge.value,
            call_fees: charge.call_fee,
            value_fees: charge.value_fee,
        }
    }

    fn merge(&mut self, other: &Sums) -> Result<(), BillingError> {
        let add = |sum: Decimal, more: Decimal, what| {
            sum.checked_add(more).ok_or(BillingError::Overflow { what })
        };
        self.calls += other.calls;
        self.billed_calls += other.billed_calls;
        self.completed += other.completed;
        self.completed_value = add(
            self.completed_value,
            other.completed_value,
            "completed value",
        )?;
        self.call_fees = add(self.call_fees, other.call_fees, "call fees")?;
        self.value_fees = add(self.value_fees, other.value_fees, "value fees")?;
        Ok(())
    }

    /// As written on the invoice, with the currency's minor units.
    fn totals(&self, minor_units: u32) -> Result<Totals, BillingError> {
        let money = |value: Decimal| Money::new(value, minor_units);
        let total = self
            .call_fees
            .checked_add(self.value_fees)
            .ok_or(BillingError::Overflow { what: "total" })?;
        Ok(Totals {
            calls: self.calls,
            billed_calls: self.billed_calls,
            completed: self.completed,
            completed_value: money(self.completed_value),
            call_fees: money(self.call_fees),
            value_fees: money(self.value_fees),
            total: money(total),
        })
    }
}

/// Takes an app's metered calls of a period one at a time.
pub struct InvoiceBuilder<'s> {
    schedule: &'s FeeSchedule,
    app_id: String,
    period: Period,
    lines: BTreeMap<LineKey, Sums>,
}

impl<'s> InvoiceBuilder<'s> {
    pub fn new(schedule: &'s FeeSchedule, app_id: &str, period: Period) -> Self {
        InvoiceBuilder {
            schedule,
            app_id: app_id.to_owned(),
            period,
            lines: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, call: &Call<'_>) -> Result<(), BillingError> {
        let charge = match call.price {
            Some(price) if price.currency != self.schedule.currency => {
                return Err(BillingError::CurrencyChanged {
                    was: price.currency.clone(),
                    now: self.schedule.currency.clone(),
                })
            }
            Some(price) => price.charge(call),
            None => self.schedule.charge(call),
        };
        let key = LineKey {
            request_type: call.request_type.map(str::to_owned),
            operation: call.operation.to_owned(),
            provider: call.provider.map(str::to_owned),
            status: call.status.to_owned(),
        };
        let completed = call.completed && !call.repeat;
        self.lines
            .entry(key)
            .or_default()
            .merge(&Sums::of(&charge, completed))
    }

    pub fn finish(self) -> Result<Invoice, BillingError> {
        let minor_units = self.schedule.minor_units;
        let mut totals = Sums::default();
        let mut lines = Vec::with_capacity(self.lines.len());
        for (key, sums) in self.lines {
            totals.merge(&sums)?;
            lines.push(InvoiceLine {
                request_type: key.request_type,
                operation: key.operation,
                provider: key.provider,
                status: key.status,
                sums: sums.totals(minor_units)?,
            });
        }
        Ok(Invoice {
            app_id: self.app_id,
            from: self.period.from_text(),
            to: self.period.to_text(),
            currency: self.schedule.currency.clone(),
            lines,
            totals: totals.totals(minor_units)?,
        })
    }
}

/// An amount of money written with exactly the currency's minor units
/// (`25.00`, never `25` or `25.0`), as a string in JSON: never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(Decimal);

impl Money {
    fn new(mut value: Decimal, minor_units: u32) -> Money {
        // Every fee is already to the minor unit (the config allows no finer
        // `per_call`, and value fees are rounded), so this only pads.
        value.rescale(minor_units);
        Money(value)
    }

    pub fn value(&self) -> Decimal {
        self.0
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// The calls of one service, endpoint, provider and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub request_type: Option<String>,
    pub operation: String,
    pub provider: Option<String>,
    pub status: String,
    #[serde(flatten)]
    pub sums: Totals,
}

/// What a line, or the whole invoice, adds up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub calls: u64,
    pub billed_calls: u64,
    /// Transactions these calls completed.
    pub completed: u64,
    /// Their amounts, in units.
    pub completed_value: Money,
    pub call_fees: Money,
    pub value_fees: Money,
    pub total: Money,
}

/// What one app owes for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub app_id: String,
    /// RFC 3339, UTC, inclusive.
    pub from: String,
    /// RFC 3339, UTC, exclusive.
    pub to: String,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    pub totals: Totals,
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 16] = [
    "app_id",
    "from",
    "to",
    "line",
    "request_type",
    "operation",
    "provider",
    "status",
    "calls",
    "billed_calls",
    "completed",
    "completed_value",
    "call_fees",
    "value_fees",
    "total",
    "currency",
];

impl Invoice {
    pub fn to_json(&self) -> String {
        // Plain strings and numbers only: this cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// One row per line (`line` = `item`), then one `total` row; every row
    /// names the app, the period and the currency, so rows stand alone in a
    /// spreadsheet. A call with no `request_type` or provider leaves it empty.
    pub fn to_csv(&self) -> Result<String, BillingError> {
        let csv_error = |e: csv::Error| BillingError::Csv(e.to_string());
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(CSV_HEADER).map_err(csv_error)?;
        let head = [self.app_id.as_str(), &self.from, &self.to];
        let numbers = |sums: &Totals| {
            [
                sums.calls.to_string(),
                sums.billed_calls.to_string(),
                sums.completed.to_string(),
                sums.completed_value.to_string(),
                sums.call_fees.to_string(),
                sums.value_fees.to_string(),
                sums.total.to_string(),
            ]
        };
        let mut write = |names: [&str; 5], sums: &Totals| {
            let numbers = numbers(sums);
            let row = head
                .iter()
                .copied()
                .chain(names)
                .chain(numbers.iter().map(String::as_str))
                .chain([self.currency.as_str()]);
            writer.write_record(row).map_err(csv_error)
        };
        for line in &self.lines {
            let names = [
                "item",
                line.request_type.as_deref().unwrap_or(""),
                &line.operation,
                line.provider.as_deref().unwrap_or(""),
                &line.status,
            ];
            write(names, &line.sums)?;
        }
        write(["total", "", "", "", ""], &self.totals)?;
        let bytes = writer
            .into_inner()
            .map_err(|e| BillingError::Csv(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| BillingError::Csv(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fee;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn schedule() -> FeeSchedule {
        FeeSchedule {
            currency: "NGN".into(),
            minor_units: 2,
            bill_failed: false,
            bill_rejected: false,
            bill_repeats: true,
            fees: [(
                "transfer_funds".to_owned(),
                Fee {
                    per_call: d("5"),
                    percent: d("0.5"),
                    minimum: d("10.00"),
                    cap: None,
                },
            )]
            .into(),
            default_fee: Fee {
                per_call: d("0.50"),
                ..Fee::default()
            },
        }
    }

    fn call(
        request_type: Option<&'static str>,
        operation: &'static str,
        status: &'static str,
        amount: Option<u64>,
        completed: bool,
    ) -> Call<'static> {
        Call {
            request_type,
            operation,
            provider: request_type.map(|_| "bank"),
            status,
            http_status: if status == "Failed" && request_type.is_none() {
                400
            } else {
                200
            },
            amount,
            repeat: false,
            completed,
            price: None,
        }
    }

    #[test]
    fn lines_group_calls_and_totals_add_them_up() {
        let schedule = schedule();
        let period = Period::parse("2026-11-01", "2026-12-01").unwrap();
        let mut builder = InvoiceBuilder::new(&schedule, "shop, \"north\"", period);
        let transfer = Some("transfer_funds");
        // An OTP transfer: transact waits, validate completes it.
        builder
            .add(&call(
                transfer,
                "transact",
                "WaitingForOTP",
                Some(500_000),
                false,
            ))
            .unwrap();
        builder
            .add(&call(
                transfer,
                "validate",
                "Successful",
                Some(500_000),
                true,
            ))
            .unwrap();
        // A transfer completed at once, and a repeat of it.
        builder
            .add(&call(transfer, "transact", "Successful", Some(1_000), true))
            .unwrap();
        builder
            .add(&Call {
                repeat: true,
                completed: false,
                ..call(transfer, "transact", "Successful", Some(1_000), false)
            })
            .unwrap();
        // A declined transfer (not billed: bill_failed is off), a balance
        // enquiry and a call rejected before its service was known.
        builder
            .add(&call(transfer, "transact", "Failed", Some(7), false))
            .unwrap();
        builder
            .add(&call(
                Some("get_balance"),
                "transact",
                "Successful",
                Some(0),
                true,
            ))
            .unwrap();
        builder
            .add(&call(None, "transact", "Failed", None, false))
            .unwrap();
        let invoice = builder.finish().unwrap();

        let csv = invoice.to_csv().unwrap();
        let expected = "\
app_id,from,to,line,request_type,operation,provider,status,calls,billed_calls,completed,completed_value,call_fees,value_fees,total,currency
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,,transact,,Failed,1,0,0,0.00,0.00,0.00,0.00,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,get_balance,transact,bank,Successful,1,1,1,0.00,0.50,0.00,0.50,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,transfer_funds,transact,bank,Failed,1,0,0,0.00,0.00,0.00,0.00,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,transfer_funds,transact,bank,Successful,2,2,1,10.00,10.00,10.00,20.00,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,transfer_funds,transact,bank,WaitingForOTP,1,1,0,0.00,5.00,0.00,5.00,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,item,transfer_funds,validate,bank,Successful,1,1,1,5000.00,5.00,25.00,30.00,NGN
\"shop, \"\"north\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,total,,,,,7,5,3,5010.00,20.50,35.00,55.50,NGN
";
        assert_eq!(csv, expected);

        let json: serde_json::Value = serde_json::from_str(&invoice.to_json()).unwrap();
        assert_eq!(json["currency"], "NGN");
        assert_eq!(json["lines"].as_array().unwrap().len(), 6);
        assert_eq!(json["lines"][0]["request_type"], serde_json::Value::Null);
        assert_eq!(
            json["totals"],
            serde_json::json!({
                "calls": 7, "billed_calls": 5, "completed": 3,
                "completed_value": "5010.00", "call_fees": "20.50",
                "value_fees": "35.00", "total": "55.50"
            })
        );
    }

    /// A call is priced as it was when made, whatever the fees are now; a
    /// price in another currency cannot be added up.
    #[test]
    fn a_stored_price_wins_over_todays_fees() {
        let then = schedule();
        let mut now = schedule();
        now.fees.get_mut("transfer_funds").unwrap().per_call = d("7.00");
        let made = call(
            Some("transfer_funds"),
            "transact",
            "Successful",
            Some(500_000),
            true,
        );
        let price = then.price(&made);
        let period = Period::parse("2026-11-01", "2026-12-01").unwrap();
        let mut builder = InvoiceBuilder::new(&now, "shop", period);
        builder
            .add(&Call {
                price: Some(&price),
                ..made
            })
            .unwrap();
        builder.add(&made).unwrap();
        let invoice = builder.finish().unwrap();
        // 5.00 + 25.00 as priced then; 7.00 + 25.00 for the unpriced call.
        assert_eq!(invoice.totals.call_fees.to_string(), "12.00");
        assert_eq!(invoice.totals.value_fees.to_string(), "50.00");
        assert_eq!(invoice.totals.completed_value.to_string(), "10000.00");

        let dollars = FeeSchedule {
            currency: "USD".into(),
            ..schedule()
        };
        let mut builder = InvoiceBuilder::new(&dollars, "shop", period);
        assert_eq!(
            builder.add(&Call {
                price: Some(&price),
                ..made
            }),
            Err(BillingError::CurrencyChanged {
                was: "NGN".into(),
                now: "USD".into()
            })
        );
    }

    #[test]
    fn an_empty_period_has_no_lines_and_zero_totals() {
        let schedule = FeeSchedule::default();
        let period = Period::parse("2026-11-01", "2026-11-02").unwrap();
        let invoice = InvoiceBuilder::new(&schedule, "shop", period)
            .finish()
            .unwrap();
        assert!(invoice.lines.is_empty());
        assert_eq!(invoice.totals.total.to_string(), "0.00");
        assert_eq!(invoice.currency, "XXX");
        assert_eq!(invoice.to_csv().unwrap().lines().count(), 2);
    }
}
