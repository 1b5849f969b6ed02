-- stg_pos_cash_balance: one row per earlier POS / cash loan (SK_ID_PREV) and month.
-- Numbers cast to DOUBLE; 'XNA' status becomes NULL.
select
    SK_ID_PREV,
    SK_ID_CURR,
    nullif(NAME_CONTRACT_STATUS, 'XNA') as NAME_CONTRACT_STATUS,
    columns('^(MONTHS_BALANCE|CNT_INSTALMENT|CNT_INSTALMENT_FUTURE|SK_DPD|SK_DPD_DEF)$')::double,
from pos_cash_balance
