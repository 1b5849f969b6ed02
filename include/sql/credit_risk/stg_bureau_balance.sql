-- stg_bureau_balance: one row per bureau credit and month (MONTHS_BALANCE, 0 = the application
-- month). STATUS: 'C' closed, 'X' unknown, '0'..'5' days-past-due bucket.
select
    SK_ID_BUREAU,
    MONTHS_BALANCE::double as MONTHS_BALANCE,
    STATUS,
from bureau_balance
