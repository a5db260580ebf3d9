//! `/transact/validate`: the customer's answer (an OTP, a confirmation) to a
//! transaction waiting for it.

use manifold_crypto::plaintext::open_validation;
use manifold_provider::ValidateRequest;

use super::fingerprint::fingerprint;
use super::{advance, Answer, Engine};
use crate::envelope;
use crate::error::SwitchError;
use crate::signed::VerifiedCall;
use crate::store::Operation;

impl Engine {
    pub async fn validate(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_validate(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let input = open_validation(&app.key, &request.request_ref, &request.secure)
            .map_err(SwitchError::SecureRejected)?;
        let fingerprint = fingerprint(&app.key, &root, Some(&input.to_plaintext()));
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
                Some(&request.request_type),
                Some(&request.auth_provider),
            )
            .await?;
        if !record.status.awaits_validation() {
            return Err(SwitchError::NotAwaitingValidation(record.status));
        }
        let route = self.router.route(&record.provider)?;
        let _slot = route
            .limits
            .gate
            .enter()
            .map_err(SwitchError::LimitExceeded)?;
        let call = ValidateRequest {
            app_id: app.id().to_owned(),
            request_ref: request.request_ref.clone(),
            request_type: record.request_type.clone(),
            transaction_ref: record.transaction_ref.clone(),
            input,
        };
        self.act_on_transaction(
            signed,
            &route,
            &record,
            Operation::Validate,
            &request.request_ref,
            &fingerprint,
            route.provider.validate(call),
            // The provider lost or never had the pending state: nothing can complete it.
            "The provider has nothing awaiting validation for this transaction",
            advance,
        )
        .await
    }
}
