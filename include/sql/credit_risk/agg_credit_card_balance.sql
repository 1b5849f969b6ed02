-- agg_credit_card_balance: one row per applicant (SK_ID_CURR) with monthly credit-card history.
-- CC_<col>_<MIN|MAX|MEAN|SUM|VAR> for every numeric column, CC_COUNT (card-months).
select
    SK_ID_CURR,
    min(columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')) as 'CC_\1_MIN',
    max(columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')) as 'CC_\1_MAX',
    avg(columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')) as 'CC_\1_MEAN',
    sum(columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')) as 'CC_\1_SUM',
    var_samp(columns('^(MONTHS_BALANCE|AMT_.*|CNT_.*|SK_DPD|SK_DPD_DEF)$')) as 'CC_\1_VAR',
    count(*)::double as CC_COUNT,
from stg_credit_card_balance
group by SK_ID_CURR
