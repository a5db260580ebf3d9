//! `/transact/reverse`: undo a successful transaction at its provider.

use manifold_provider::{ProviderReply, ReverseRequest, Status};

use super::fingerprint::fingerprint;
use super::{now_ms, Answer, Engine};
use crate::envelope;
use crate::error::SwitchError;
use crate::signed::VerifiedCall;
use crate::store::{Operation, Reversal, TransactionRecord};

impl Engine {
    pub async fn reverse(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_reference(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let fingerprint = fingerprint(&app.key, &root, None);
        if let Some(replay) = self
            .repeat_of(app, &request.request_ref, &fingerprint)
            .await?
        {
            return Ok(replay);
        }
        let record = self
            .named_transaction(
                app,
                &request.transaction_ref,
                request.request_type.as_deref(),
                request.auth_provider.as_deref(),
            )
            .await?;
        let route = self.router.route(&record.provider)?;
        if !route.config.reversible.contains(&record.request_type) {
            return Err(SwitchError::NotReversible(format!(
                "provider `{}` does not reverse `{}`",
                record.provider, record.request_type
            )));
        }
        if record.status != Status::Successful {
            return Err(SwitchError::NotReversible(format!(
                "it is {}; only a Successful transaction can be reversed",
                record.status
            )));
        }
        if record.customer_data_dropped_at_ms.is_some() {
            return Err(SwitchError::NotReversible(
                "it settled longer ago than the switch's retention period, and its details \
                 were dropped; reverse it with the provider directly"
                    .into(),
            ));
        }
        // A reversal whose outcome is unknown is retried under its first
        // request_ref, so the provider recognises it rather than reversing twice.
        let provider_request_ref = match &record.reversal {
            Some(reversal) if reversal.status == Status::Successful => {
                return Err(SwitchError::NotReversible(
                    "it has already been reversed".into(),
                ));
            }
            Some(reversal) if reversal.status == Status::Pending => reversal.request_ref.clone(),
            _ => request.request_ref.clone(),
        };
        let _slot = route
            .limits
            .gate
            .enter()
            .map_err(SwitchError::LimitExceeded)?;
        let call = ReverseRequest {
            app_id: app.id().to_owned(),
            request_ref: provider_request_ref.clone(),
            request_type: record.request_type.clone(),
            transaction_ref: record.transaction_ref.clone(),
        };
        let apply =
            move |record: &mut TransactionRecord, status: Status, reply: Option<&ProviderReply>| {
                // The transaction itself stays Successful; the reversal is its own outcome.
                if record
                    .reversal
                    .as_ref()
                    .is_some_and(|r| r.status == Status::Successful)
                {
                    return;
                }
                record.reversal = Some(Reversal {
                    request_ref: provider_request_ref.clone(),
                    status,
                    at_ms: now_ms(),
                    reply: reply.cloned(),
                });
            };
        self.act_on_transaction(
            signed,
            &route,
            &record,
            Operation::Reverse,
            &request.request_ref,
            &fingerprint,
            route.provider.reverse(call),
            "The provider has no record of this transaction, so it cannot reverse it",
            apply,
        )
        .await
    }
}
