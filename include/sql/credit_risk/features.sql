-- features: the credit_risk feature table, one row per application (SK_ID_CURR): the staged
-- application columns (real names, categoricals as VARCHAR) plus every per-applicant aggregate.
-- Applicants without a history in a source get NULLs for that source's columns.
select *
from stg_application as application
left join agg_bureau as bureau using (SK_ID_CURR)
left join agg_previous_application as previous using (SK_ID_CURR)
left join agg_pos_cash_balance as pos_cash using (SK_ID_CURR)
left join agg_installments_payments as installments using (SK_ID_CURR)
left join agg_credit_card_balance as credit_card using (SK_ID_CURR)
