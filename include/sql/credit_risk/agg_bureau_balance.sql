-- agg_bureau_balance: one row per bureau credit (SK_ID_BUREAU), summarising its monthly history.
-- BB_MONTHS_BALANCE_MIN/MAX/COUNT: oldest / latest month and number of months reported;
-- BB_STATUS_<s>_SHARE: share of months in status s ('0'..'5' days-past-due bucket, 'C', 'X').
select
    SK_ID_BUREAU,
    min(MONTHS_BALANCE) as BB_MONTHS_BALANCE_MIN,
    max(MONTHS_BALANCE) as BB_MONTHS_BALANCE_MAX,
    count(*)::double as BB_MONTHS_BALANCE_COUNT,
    avg(if(STATUS = '0', 1, 0)) as BB_STATUS_0_SHARE,
    avg(if(STATUS = '1', 1, 0)) as BB_STATUS_1_SHARE,
    avg(if(STATUS = '2', 1, 0)) as BB_STATUS_2_SHARE,
    avg(if(STATUS = '3', 1, 0)) as BB_STATUS_3_SHARE,
    avg(if(STATUS = '4', 1, 0)) as BB_STATUS_4_SHARE,
    avg(if(STATUS = '5', 1, 0)) as BB_STATUS_5_SHARE,
    avg(if(STATUS = 'C', 1, 0)) as BB_STATUS_C_SHARE,
    avg(if(STATUS = 'X', 1, 0)) as BB_STATUS_X_SHARE,
from stg_bureau_balance
group by SK_ID_BUREAU
