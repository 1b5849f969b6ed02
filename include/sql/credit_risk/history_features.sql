-- history_features: the history-level part of the credit_risk features, one row per applicant
-- (SK_ID_CURR) found in any history table: every aggregate of bureau (with bureau_balance),
-- previous_application, POS_CASH_balance, installments_payments and credit_card_balance.
-- features.sql joins it to the application-level part; the online store holds exactly this
-- view per applicant (`mlops materialize`), so a request with only the application gets the
-- same features batch scoring computes. It reads no application column: an applicant's
-- history features do not depend on the application being scored.
with applicants as (
    select SK_ID_CURR from agg_bureau
    union
    select SK_ID_CURR from agg_previous_application
    union
    select SK_ID_CURR from agg_pos_cash_balance
    union
    select SK_ID_CURR from agg_installments_payments
    union
    select SK_ID_CURR from agg_credit_card_balance
)

select *
from applicants
left join agg_bureau as bureau using (SK_ID_CURR)
left join agg_previous_application as previous using (SK_ID_CURR)
left join agg_pos_cash_balance as pos_cash using (SK_ID_CURR)
left join agg_installments_payments as installments using (SK_ID_CURR)
left join agg_credit_card_balance as credit_card using (SK_ID_CURR)
