-- stg_credit_card_balance: one row per earlier credit card (SK_ID_PREV) and month.
-- Numbers cast to DOUBLE (sums of DOUBLE stay DOUBLE when aggregated).
select
    SK_ID_PREV,
    SK_ID_CURR,
    NAME_CONTRACT_STATUS,
    columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')::double,
from credit_card_balance
