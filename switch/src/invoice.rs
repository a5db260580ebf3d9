//! Invoices from the store: an app's metered calls of a period, priced by
//! the host's fee schedule (`manifold-billing` holds the fee model). The
//! `manifold invoice` command and the admin API both call [`invoice`].

use manifold_billing::{BillingError, Call, FeeSchedule, Invoice, InvoiceBuilder, Period};

use crate::store::{MeteredCall, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Billing(#[from] BillingError),
}

/// What `app_id` owes for `period` under `schedule`. Streams the period's
/// metered calls through the pricing, a batch at a time.
pub async fn invoice(
    store: &dyn Store,
    schedule: &FeeSchedule,
    app_id: &str,
    period: Period,
) -> Result<Invoice, InvoiceError> {
    invoice_with_progress(store, schedule, app_id, period, &mut |_| {}).await
}

/// As [`invoice`], telling `progress` the time of each call read (calls are
/// read oldest first, a minute at a time), so a long invoice can show how
/// far through its period it is.
pub async fn invoice_with_progress(
    store: &dyn Store,
    schedule: &FeeSchedule,
    app_id: &str,
    period: Period,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Invoice, InvoiceError> {
    let mut builder = InvoiceBuilder::new(schedule, app_id, period);
    let mut failed = None;
    store
        .each_metered(app_id, period.from_ms, period.until_ms, &mut |call| {
            progress(call.at_ms);
            if failed.is_none() {
                if let Err(error) = builder.add(&billed(call)) {
                    failed = Some(error);
                }
            }
        })
        .await?;
    if let Some(error) = failed {
        return Err(error.into());
    }
    Ok(builder.finish()?)
}

/// A metered call as billing reads it.
pub fn billed(call: &MeteredCall) -> Call<'_> {
    Call {
        request_type: call.request_type.as_deref(),
        operation: call.operation.as_str(),
        provider: call.provider.as_deref(),
        status: call.status.as_str(),
        http_status: call.http_status,
        amount: call.amount,
        repeat: call.repeat,
        completed: call.completed,
        price: call.price.as_ref(),
    }
}
