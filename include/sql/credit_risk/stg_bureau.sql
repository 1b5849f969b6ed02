-- stg_bureau: one row per credit reported by the credit bureau, keyed by SK_ID_BUREAU
-- (SK_ID_CURR = the applicant). Numbers cast to DOUBLE; 'XNA' categories become NULL.
select
    SK_ID_CURR,
    SK_ID_BUREAU,
    nullif(CREDIT_ACTIVE, 'XNA') as CREDIT_ACTIVE,
    nullif(CREDIT_CURRENCY, 'XNA') as CREDIT_CURRENCY,
    nullif(CREDIT_TYPE, 'XNA') as CREDIT_TYPE,
    columns('^(DAYS|AMT|CNT)_.*$')::double,
    CREDIT_DAY_OVERDUE::double as CREDIT_DAY_OVERDUE,
from bureau
