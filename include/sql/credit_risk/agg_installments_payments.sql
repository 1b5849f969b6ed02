-- agg_installments_payments: one row per applicant (SK_ID_CURR) with instalment history on
-- earlier credits. INSTAL_<col>_<stat> as in jsaguiar's Home Credit LightGBM kernel;
-- INSTAL_NUM_INSTALMENT_VERSION_NUNIQUE counts distinct schedule versions, INSTAL_COUNT the rows.
select
    SK_ID_CURR,
    count(distinct NUM_INSTALMENT_VERSION)::double as INSTAL_NUM_INSTALMENT_VERSION_NUNIQUE,
    min(columns('^(AMT_PAYMENT)$')) as 'INSTAL_\1_MIN',
    max(columns('^(DAYS_PAST_DUE|DAYS_BEFORE_DUE|PAYMENT_RATIO|PAYMENT_DIFF|AMT_INSTALMENT|AMT_PAYMENT|DAYS_ENTRY_PAYMENT)$')) as 'INSTAL_\1_MAX',
    avg(columns('^(DAYS_PAST_DUE|DAYS_BEFORE_DUE|PAYMENT_RATIO|PAYMENT_DIFF|AMT_INSTALMENT|AMT_PAYMENT|DAYS_ENTRY_PAYMENT)$')) as 'INSTAL_\1_MEAN',
    sum(columns('^(DAYS_PAST_DUE|DAYS_BEFORE_DUE|PAYMENT_RATIO|PAYMENT_DIFF|AMT_INSTALMENT|AMT_PAYMENT|DAYS_ENTRY_PAYMENT)$')) as 'INSTAL_\1_SUM',
    var_samp(columns('^(PAYMENT_RATIO|PAYMENT_DIFF)$')) as 'INSTAL_\1_VAR',
    count(*)::double as INSTAL_COUNT,
from stg_installments_payments
group by SK_ID_CURR
