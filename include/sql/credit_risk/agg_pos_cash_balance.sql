-- agg_pos_cash_balance: one row per applicant (SK_ID_CURR) with monthly POS / cash loan history.
--   POS_MONTHS_BALANCE_MAX/MEAN, POS_SK_DPD(_DEF)_MAX/MEAN (days past due, with tolerance),
--   POS_CONTRACT_STATUS_<value>_SHARE (share of months in a status), POS_COUNT (months).
select
    SK_ID_CURR,
    max(columns('^(MONTHS_BALANCE|SK_DPD|SK_DPD_DEF)$')) as 'POS_\1_MAX',
    avg(columns('^(MONTHS_BALANCE|SK_DPD|SK_DPD_DEF)$')) as 'POS_\1_MEAN',
    avg(if(NAME_CONTRACT_STATUS = 'Active', 1, 0)) as POS_CONTRACT_STATUS_ACTIVE_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Completed', 1, 0)) as POS_CONTRACT_STATUS_COMPLETED_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Signed', 1, 0)) as POS_CONTRACT_STATUS_SIGNED_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Demand', 1, 0)) as POS_CONTRACT_STATUS_DEMAND_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Returned to the store', 1, 0)) as POS_CONTRACT_STATUS_RETURNED_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Approved', 1, 0)) as POS_CONTRACT_STATUS_APPROVED_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Amortized debt', 1, 0)) as POS_CONTRACT_STATUS_AMORTIZED_DEBT_SHARE,
    avg(if(NAME_CONTRACT_STATUS = 'Canceled', 1, 0)) as POS_CONTRACT_STATUS_CANCELED_SHARE,
    count(*)::double as POS_COUNT,
from stg_pos_cash_balance
group by SK_ID_CURR
