-- agg_previous_application: one row per applicant (SK_ID_CURR) with earlier Home Credit applications.
--   PREV_<col>_<MIN|MAX|MEAN|SUM|VAR>          numeric aggregates over all earlier applications,
--   PREV_APPROVED_..., PREV_REFUSED_...         the same aggregates over approved / refused ones,
--   PREV_DAYS_<first due|last due|termination>_MAX/MEAN   repayment dates (only approved
--                                               applications have them, so no split),
--   PREV_<column>_<value>_SHARE                 share of applications in a category, PREV_COUNT.
-- Statistic per column follows jsaguiar's Home Credit LightGBM kernel.
with scoped_applications as (
    select 'ALL' as SCOPE, * from stg_previous_application
    union all
    select upper(NAME_CONTRACT_STATUS) as SCOPE, *
    from stg_previous_application
    where NAME_CONTRACT_STATUS in ('Approved', 'Refused')
),

numeric_by_scope as (
    select
        SK_ID_CURR,
        SCOPE,
        min(columns(
            '^(AMT_(ANNUITY|APPLICATION|CREDIT|DOWN_PAYMENT|GOODS_PRICE)|APP_CREDIT_RATIO'
            || '|HOUR_APPR_PROCESS_START|RATE_DOWN_PAYMENT|DAYS_DECISION)$'
        )) as '\1_MIN',
        max(columns(
            '^(AMT_(ANNUITY|APPLICATION|CREDIT|DOWN_PAYMENT|GOODS_PRICE)|APP_CREDIT_RATIO'
            || '|HOUR_APPR_PROCESS_START|RATE_DOWN_PAYMENT|DAYS_DECISION)$'
        )) as '\1_MAX',
        avg(columns(
            '^(AMT_(ANNUITY|APPLICATION|CREDIT|DOWN_PAYMENT|GOODS_PRICE)|APP_CREDIT_RATIO'
            || '|HOUR_APPR_PROCESS_START|RATE_DOWN_PAYMENT|DAYS_DECISION|CNT_PAYMENT)$'
        )) as '\1_MEAN',
        sum(columns('^(CNT_PAYMENT)$')) as '\1_SUM',
        var_samp(columns('^(APP_CREDIT_RATIO)$')) as '\1_VAR',
    from scoped_applications
    group by SK_ID_CURR, SCOPE
),

all_applications as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'PREV_\1'
    from numeric_by_scope
    where SCOPE = 'ALL'
),

approved_applications as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'PREV_APPROVED_\1'
    from numeric_by_scope
    where SCOPE = 'APPROVED'
),

refused_applications as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'PREV_REFUSED_\1'
    from numeric_by_scope
    where SCOPE = 'REFUSED'
),

-- over all earlier applications; shares count a NULL category as "not this value"
dates_and_shares as (
    select
        SK_ID_CURR,
        max(columns('^(DAYS_(FIRST_DUE|LAST_DUE_1ST_VERSION|LAST_DUE|TERMINATION))$')) as 'PREV_\1_MAX',
        avg(columns('^(DAYS_(FIRST_DUE|LAST_DUE_1ST_VERSION|LAST_DUE|TERMINATION))$')) as 'PREV_\1_MEAN',
        avg(if(NAME_CONTRACT_STATUS = 'Approved', 1, 0)) as PREV_CONTRACT_STATUS_APPROVED_SHARE,
        avg(if(NAME_CONTRACT_STATUS = 'Refused', 1, 0)) as PREV_CONTRACT_STATUS_REFUSED_SHARE,
        avg(if(NAME_CONTRACT_STATUS = 'Canceled', 1, 0)) as PREV_CONTRACT_STATUS_CANCELED_SHARE,
        avg(if(NAME_CONTRACT_STATUS = 'Unused offer', 1, 0)) as PREV_CONTRACT_STATUS_UNUSED_OFFER_SHARE,
        avg(if(NAME_CONTRACT_TYPE = 'Cash loans', 1, 0)) as PREV_CONTRACT_TYPE_CASH_SHARE,
        avg(if(NAME_CONTRACT_TYPE = 'Consumer loans', 1, 0)) as PREV_CONTRACT_TYPE_CONSUMER_SHARE,
        avg(if(NAME_CONTRACT_TYPE = 'Revolving loans', 1, 0)) as PREV_CONTRACT_TYPE_REVOLVING_SHARE,
        avg(if(NAME_CLIENT_TYPE = 'New', 1, 0)) as PREV_CLIENT_TYPE_NEW_SHARE,
        avg(if(NAME_CLIENT_TYPE = 'Repeater', 1, 0)) as PREV_CLIENT_TYPE_REPEATER_SHARE,
        avg(if(NAME_CLIENT_TYPE = 'Refreshed', 1, 0)) as PREV_CLIENT_TYPE_REFRESHED_SHARE,
        avg(if(NAME_PORTFOLIO = 'POS', 1, 0)) as PREV_PORTFOLIO_POS_SHARE,
        avg(if(NAME_PORTFOLIO = 'Cash', 1, 0)) as PREV_PORTFOLIO_CASH_SHARE,
        avg(if(NAME_PORTFOLIO = 'Cards', 1, 0)) as PREV_PORTFOLIO_CARDS_SHARE,
        avg(if(NAME_PORTFOLIO = 'Cars', 1, 0)) as PREV_PORTFOLIO_CARS_SHARE,
        avg(if(NAME_PRODUCT_TYPE = 'x-sell', 1, 0)) as PREV_PRODUCT_TYPE_X_SELL_SHARE,
        avg(if(NAME_PRODUCT_TYPE = 'walk-in', 1, 0)) as PREV_PRODUCT_TYPE_WALK_IN_SHARE,
        avg(if(NAME_YIELD_GROUP = 'high', 1, 0)) as PREV_YIELD_GROUP_HIGH_SHARE,
        avg(if(NAME_YIELD_GROUP = 'middle', 1, 0)) as PREV_YIELD_GROUP_MIDDLE_SHARE,
        avg(if(NAME_YIELD_GROUP = 'low_normal', 1, 0)) as PREV_YIELD_GROUP_LOW_NORMAL_SHARE,
        avg(if(NAME_YIELD_GROUP = 'low_action', 1, 0)) as PREV_YIELD_GROUP_LOW_ACTION_SHARE,
        avg(if(CODE_REJECT_REASON = 'HC', 1, 0)) as PREV_REJECT_REASON_HC_SHARE,
        avg(if(CODE_REJECT_REASON = 'LIMIT', 1, 0)) as PREV_REJECT_REASON_LIMIT_SHARE,
        avg(if(CODE_REJECT_REASON = 'SCO', 1, 0)) as PREV_REJECT_REASON_SCO_SHARE,
        avg(if(CODE_REJECT_REASON = 'SCOFR', 1, 0)) as PREV_REJECT_REASON_SCOFR_SHARE,
        avg(if(CODE_REJECT_REASON = 'CLIENT', 1, 0)) as PREV_REJECT_REASON_CLIENT_SHARE,
        avg(if(CODE_REJECT_REASON = 'VERIF', 1, 0)) as PREV_REJECT_REASON_VERIF_SHARE,
        avg(if(NAME_PAYMENT_TYPE = 'Cash through the bank', 1, 0)) as PREV_PAYMENT_TYPE_CASH_THROUGH_BANK_SHARE,
        avg(if(CHANNEL_TYPE = 'Credit and cash offices', 1, 0)) as PREV_CHANNEL_CREDIT_AND_CASH_OFFICES_SHARE,
        avg(if(CHANNEL_TYPE = 'Country-wide', 1, 0)) as PREV_CHANNEL_COUNTRY_WIDE_SHARE,
        avg(if(CHANNEL_TYPE = 'Stone', 1, 0)) as PREV_CHANNEL_STONE_SHARE,
        avg(if(CHANNEL_TYPE = 'Regional / Local', 1, 0)) as PREV_CHANNEL_REGIONAL_LOCAL_SHARE,
        avg(if(CHANNEL_TYPE = 'AP+ (Cash loan)', 1, 0)) as PREV_CHANNEL_AP_PLUS_CASH_LOAN_SHARE,
        avg(if(NAME_GOODS_CATEGORY = 'Mobile', 1, 0)) as PREV_GOODS_CATEGORY_MOBILE_SHARE,
        avg(if(NAME_GOODS_CATEGORY = 'Consumer Electronics', 1, 0)) as PREV_GOODS_CATEGORY_CONSUMER_ELECTRONICS_SHARE,
        avg(if(NAME_GOODS_CATEGORY = 'Computers', 1, 0)) as PREV_GOODS_CATEGORY_COMPUTERS_SHARE,
        avg(if(PRODUCT_COMBINATION = 'Cash', 1, 0)) as PREV_PRODUCT_COMBINATION_CASH_SHARE,
        avg(if(PRODUCT_COMBINATION = 'Card Street', 1, 0)) as PREV_PRODUCT_COMBINATION_CARD_STREET_SHARE,
        avg(if(PRODUCT_COMBINATION = 'Cash Street: high', 1, 0)) as PREV_PRODUCT_COMBINATION_CASH_STREET_HIGH_SHARE,
        avg(if(PRODUCT_COMBINATION = 'Cash X-Sell: low', 1, 0)) as PREV_PRODUCT_COMBINATION_CASH_X_SELL_LOW_SHARE,
        avg(if(PRODUCT_COMBINATION = 'POS household with interest', 1, 0)) as PREV_PRODUCT_COMBINATION_POS_HOUSEHOLD_INTEREST_SHARE,
        avg(if(PRODUCT_COMBINATION = 'POS mobile with interest', 1, 0)) as PREV_PRODUCT_COMBINATION_POS_MOBILE_INTEREST_SHARE,
        avg(if(FLAG_LAST_APPL_PER_CONTRACT = 'N', 1, 0)) as PREV_NOT_LAST_APPL_PER_CONTRACT_SHARE,
        avg(NFLAG_INSURED_ON_APPROVAL) as PREV_NFLAG_INSURED_ON_APPROVAL_MEAN,
        count(*)::double as PREV_COUNT,
    from stg_previous_application
    group by SK_ID_CURR
)

select *
from dates_and_shares
left join all_applications using (SK_ID_CURR)
left join approved_applications using (SK_ID_CURR)
left join refused_applications using (SK_ID_CURR)
