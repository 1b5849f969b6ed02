-- stg_installments_payments: one row per instalment due (and its payment) on an earlier credit.
-- Row-level derived: PAYMENT_RATIO (paid / due), PAYMENT_DIFF (due - paid), DAYS_PAST_DUE and
-- DAYS_BEFORE_DUE (days paid after / before the due date, floored at 0; NULL when nothing was paid).
with typed as (
    select
        SK_ID_PREV,
        SK_ID_CURR,
        columns('^(NUM|DAYS|AMT)_.*$')::double,
    from installments_payments
)

select
    *,
    AMT_PAYMENT / nullif(AMT_INSTALMENT, 0) as PAYMENT_RATIO,
    AMT_INSTALMENT - AMT_PAYMENT as PAYMENT_DIFF,
    if(DAYS_ENTRY_PAYMENT is null, null, greatest(DAYS_ENTRY_PAYMENT - DAYS_INSTALMENT, 0)) as DAYS_PAST_DUE,
    if(DAYS_ENTRY_PAYMENT is null, null, greatest(DAYS_INSTALMENT - DAYS_ENTRY_PAYMENT, 0)) as DAYS_BEFORE_DUE,
from typed
