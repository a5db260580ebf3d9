//! The PostgreSQL store's tables, created and upgraded by numbered
//! migrations when a switch connects.
//!
//! Every migration runs once, in order, inside one transaction that holds an
//! advisory lock, so switches started together never race each other through
//! it; `manifold_schema_migrations` records which ran. A database whose
//! highest version is above what this build knows was upgraded by a newer
//! Manifold and is refused rather than misread. Migrations are append-only:
//! a released one is never edited, a change is a new one.
//!
//! What each table holds, and which constraint makes which promise:
//! - `manifold_transactions`, one row per transaction, primary key
//!   `(app_id, transaction_ref)`: a `transaction_ref` is unique per app. The
//!   record itself (requests, their answers, history) is the codec's
//!   encoding, sealed under the host's data key (`record`); the columns
//!   beside it are what queries filter on. A trigger refuses any update
//!   that would move a `Successful` or `Failed` transaction to another
//!   status.
//! - `manifold_requests`, one row per `request_ref`, primary key
//!   `(app_id, request_ref)`: a `request_ref` is claimed once, by whichever
//!   switch inserts it first (`INSERT … ON CONFLICT DO NOTHING`); it points
//!   at its transaction.
//! - `manifold_metered_calls`: one row per billable call, indexed by app
//!   and time so an invoice reads its period only; `call_id` (version 2,
//!   unique) is the id its switch gave it, so a batch written twice counts
//!   each call once.
//! - `manifold_meta`: the ids of the data keys records are sealed under.
//! - `manifold_begin(…)` (version 2): claims a transaction's first
//!   `request_ref` and inserts its row in one statement, answering
//!   `started`, `repeat` (the `request_ref` is taken) or `taken` (the
//!   `transaction_ref` is; nothing is left of the claim).
//! - Version 3 changes no table: it marks the database as holding records
//!   of the codec's version 2 (answers as packed JSON), so that a switch
//!   of an earlier build, which would refuse those records call by call,
//!   refuses the database when it connects. (One already connected when
//!   another applies it does refuse them call by call: README's "upgrade
//!   every switch together" is what avoids that.)

use manifold_postgres::{Migration, Schema};

/// The switch's schema: every migration, in order.
pub(super) const SCHEMA: Schema = Schema {
    what: "Manifold",
    table: "manifold_schema_migrations",
    lock: MIGRATION_LOCK,
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "transactions, requests, metered calls",
        sql: r#"
CREATE TABLE manifold_meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE manifold_transactions (
    app_id                text    NOT NULL,
    transaction_ref       text    NOT NULL,
    request_type          text    NOT NULL,
    provider              text    NOT NULL,
    amount                bigint  NOT NULL CHECK (amount >= 0),
    status                text    NOT NULL CHECK (status IN
        ('Successful', 'Failed', 'WaitingForOTP', 'PendingValidation', 'Pending')),
    created_at_ms         bigint  NOT NULL,
    updated_at_ms         bigint  NOT NULL,
    settled               boolean NOT NULL,
    customer_data_dropped boolean NOT NULL,
    record                bytea   NOT NULL,
    PRIMARY KEY (app_id, transaction_ref)
);

-- Retention looks for settled records with their customer data still in.
CREATE INDEX manifold_transactions_to_drop ON manifold_transactions (updated_at_ms)
    WHERE settled AND NOT customer_data_dropped;

CREATE FUNCTION manifold_final_status_stays() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('Successful', 'Failed') AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'transaction % of app % is %: a final status never changes (to %)',
            OLD.transaction_ref, OLD.app_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER manifold_final_status_stays
    BEFORE UPDATE OF status ON manifold_transactions
    FOR EACH ROW EXECUTE FUNCTION manifold_final_status_stays();

CREATE TABLE manifold_requests (
    app_id          text     NOT NULL,
    request_ref     text     NOT NULL,
    transaction_ref text     NOT NULL,
    operation       text     NOT NULL CHECK (operation IN ('transact', 'validate', 'query', 'reverse')),
    fingerprint     bytea    NOT NULL CHECK (length(fingerprint) = 32),
    started_at_ms   bigint   NOT NULL,
    PRIMARY KEY (app_id, request_ref)
);

CREATE TABLE manifold_metered_calls (
    id                bigserial PRIMARY KEY,
    app_id            text     NOT NULL,
    at_ms             bigint   NOT NULL,
    operation         text     NOT NULL,
    request_type      text,
    provider          text,
    status            text     NOT NULL,
    http_status       smallint NOT NULL,
    error             text,
    inspect           boolean  NOT NULL,
    transaction_ref   text,
    amount            bigint,
    repeat            boolean  NOT NULL,
    completed         boolean  NOT NULL,
    price_currency    text,
    price_minor_units integer,
    price_billed      boolean,
    price_call_fee    bigint,
    price_value_fee   bigint
);

CREATE INDEX manifold_metered_calls_period ON manifold_metered_calls (app_id, at_ms, id);
"#,
    },
    Migration {
        version: 2,
        name:
            "manifold_begin (a transaction and its first claim in one statement); metered call ids",
        sql: r#"
-- A switch writes its metered calls in batches; a batch written twice (the
-- answer to its commit lost with the connection) counts each call once.
-- Calls copied by `manifold store migrate` have none.
ALTER TABLE manifold_metered_calls ADD COLUMN call_id bytea
    CHECK (call_id IS NULL OR length(call_id) = 16);
CREATE UNIQUE INDEX manifold_metered_calls_once ON manifold_metered_calls (call_id);

-- One statement, so one round trip and one commit: the claim of the first
-- request_ref and the transaction's row, both or neither.
CREATE FUNCTION manifold_begin(
    p_app_id text, p_transaction_ref text, p_request_type text, p_provider text,
    p_amount bigint, p_status text, p_created_at_ms bigint, p_updated_at_ms bigint,
    p_settled boolean, p_customer_data_dropped boolean, p_record bytea,
    p_request_ref text, p_operation text, p_fingerprint bytea, p_started_at_ms bigint
) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO manifold_requests (app_id, request_ref, transaction_ref, operation,
            fingerprint, started_at_ms)
        VALUES (p_app_id, p_request_ref, p_transaction_ref, p_operation, p_fingerprint,
            p_started_at_ms)
        ON CONFLICT (app_id, request_ref) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'repeat';
    END IF;
    INSERT INTO manifold_transactions (app_id, transaction_ref, request_type, provider,
            amount, status, created_at_ms, updated_at_ms, settled, customer_data_dropped,
            record)
        VALUES (p_app_id, p_transaction_ref, p_request_type, p_provider, p_amount, p_status,
            p_created_at_ms, p_updated_at_ms, p_settled, p_customer_data_dropped, p_record)
        ON CONFLICT (app_id, transaction_ref) DO NOTHING;
    IF NOT FOUND THEN
        -- Another transaction of the app has this transaction_ref: the
        -- claim goes again, in the same SQL transaction, so none is seen.
        DELETE FROM manifold_requests WHERE app_id = p_app_id AND request_ref = p_request_ref;
        RETURN 'taken';
    END IF;
    RETURN 'started';
END
$$;
"#,
    },
    Migration {
        version: 3,
        name: "transaction records of codec version 2 (answers as packed JSON)",
        sql: r#"
COMMENT ON COLUMN manifold_transactions.record IS
    'codec record (sealed under the data key if the host set one): version 1 (answers as JSON text) or 2 (answers as packed JSON)';
"#,
    },
];

/// The advisory lock every migrating switch takes (an arbitrary constant:
/// "manifold" in ASCII).
pub(super) const MIGRATION_LOCK: i64 = 0x6d61_6e69_666f_6c64;
