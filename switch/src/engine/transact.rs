//! `/transact`: begin a transaction and carry its first call to the provider.

use manifold_crypto::plaintext::open_source;
use manifold_provider::{Status, TransactRequest, TransactionDetails};

use super::fingerprint::fingerprint;
use super::{advance, history, http_status_for, now_ms, Answer, Claimed, Engine};
use crate::envelope::{self, MockMode};
use crate::error::SwitchError;
use crate::inspect;
use crate::signed::VerifiedCall;
use crate::store::{Begin, Operation, RequestEntry, RequestState, TransactionRecord, RECEIVED};

impl Engine {
    pub async fn transact(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_transact(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let (route, grant) =
            self.router
                .resolve(app, &request.request_type, &request.auth_provider)?;
        if let Some(limit) = grant.max_amount {
            if request.amount > limit {
                return Err(SwitchError::AmountOverLimit {
                    amount: request.amount,
                    limit,
                    request_type: request.request_type.clone(),
                });
            }
        }
        let source = open_source(
            &app.key,
            &request.request_ref,
            request.auth_type,
            &request.secure,
        )
        .map_err(SwitchError::SecureRejected)?;

        if request.mock_mode == MockMode::Inspect {
            let envelope = inspect::sample(
                route.name(),
                &request.request_type,
                &request.transaction_ref,
                request.amount,
                grant.otp_override,
            );
            return Ok(Answer::without_state(
                http_status_for(envelope.status),
                &envelope,
                Some(&request.request_type),
                Some(route.name()),
            ));
        }

        let fingerprint = fingerprint(&app.key, &root, Some(&source.to_plaintext()));
        // The limits, before anything is claimed: a refused call changes
        // nothing. The quota first, so a day's count read back from the
        // store after a restart holds no provider slot meanwhile; the slot
        // is held until the answer is recorded.
        let admitted = match app
            .limits
            .reserve_daily(&*self.store, app.id(), &request.request_type)
            .await
        {
            Ok(quota) => match route.limits.gate.enter() {
                Ok(slot) => Ok((slot, quota)),
                Err(limit) => Err(SwitchError::LimitExceeded(limit)),
            },
            Err(refused) => Err(refused.into()),
        };
        let (_slot, quota) = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                // A repeat asks nothing new of the provider or the quota:
                // it is answered whatever the limits say (an app retries
                // exactly when the provider is busiest).
                if let Some(replay) = self
                    .repeat_of(app, &request.request_ref, &fingerprint)
                    .await?
                {
                    return Ok(replay);
                }
                return Err(refused);
            }
        };

        let now = now_ms();
        let record = TransactionRecord {
            app_id: app.id().to_owned(),
            transaction_ref: request.transaction_ref.clone(),
            request_type: request.request_type.clone(),
            provider: route.name().to_owned(),
            amount: request.amount,
            status: Status::Pending,
            created_at_ms: now,
            updated_at_ms: now,
            last_reply: None,
            history: vec![history(
                Operation::Transact,
                Some(&request.request_ref),
                Status::Pending,
                None,
                RECEIVED,
            )],
            reversal: None,
            customer_data_dropped_at_ms: None,
            requests: vec![RequestEntry {
                request_ref: request.request_ref.clone(),
                operation: Operation::Transact,
                fingerprint,
                state: RequestState::InFlight { started_at_ms: now },
            }],
        };
        // A service the host declared read-only (a balance enquiry) is
        // harmless to call twice, so nothing of it need be on disk before the
        // call: it is written once, with its answer.
        let read_only = route.config.read_only.contains(&request.request_type);
        let begun = if read_only {
            self.store.begin_enquiry(&record).await?
        } else {
            self.store.begin_transaction(&record).await?
        };
        match begun {
            Begin::Started => {}
            Begin::Repeat(known) => {
                return self
                    .replay(app, &request.request_ref, *known, &fingerprint)
                    .await
            }
            Begin::TransactionRefTaken => {
                return Err(SwitchError::DuplicateTransactionRef(
                    request.transaction_ref,
                ))
            }
        }
        if !read_only {
            // The claim on disk before anything can move money.
            let _before_the_call = self.store.durable().await?;
        }

        let call = TransactRequest {
            app_id: app.id().to_owned(),
            request_ref: request.request_ref.clone(),
            request_type: request.request_type.clone(),
            transaction_ref: request.transaction_ref.clone(),
            otp_override: grant.otp_override,
            read_only,
            source,
            transaction: TransactionDetails {
                transaction_desc: request.transaction_desc.clone(),
                transaction_ref_parent: request.transaction_ref_parent.clone(),
                amount: request.amount,
                customer: request.customer.clone(),
                meta: request.meta.clone(),
                details: request.details.clone(),
            },
        };
        let result = Self::call(&route, route.provider.transact(call)).await;
        let claimed = Claimed {
            request_ref: &request.request_ref,
            transaction_ref: &request.transaction_ref,
            began_transaction: true,
        };
        // Only a call that may have reached the provider counts against the
        // quota: one it provably never reached (answered 503 or 502, and
        // free to retry) gives its reservation back, as a repeat does.
        let settled = self.settle(signed, &route, claimed, result).await?;
        if let Some(reservation) = quota {
            reservation.keep();
        }
        self.record_answer(
            app,
            &record,
            Operation::Transact,
            &request.request_ref,
            settled,
            advance,
        )
        .await
    }
}
