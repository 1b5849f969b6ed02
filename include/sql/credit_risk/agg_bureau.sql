-- agg_bureau: one row per applicant (SK_ID_CURR) with credit-bureau history.
-- Each bureau credit carries its monthly-history summary (BB_* columns), then per applicant:
--   BUREAU_<col>_<MIN|MAX|MEAN|SUM|VAR>          numeric aggregates over all credits,
--   BUREAU_ACTIVE_..., BUREAU_CLOSED_...        the same aggregates over Active / Closed credits,
--   BUREAU_<column>_<value>_SHARE               share of credits in a category,
--   BUREAU_BB_STATUS_<s>_SHARE_MEAN             mean monthly status share, BUREAU_COUNT.
-- Statistic per column follows jsaguiar's Home Credit LightGBM kernel.
with credits as (
    select *
    from stg_bureau
    left join agg_bureau_balance using (SK_ID_BUREAU)
),

-- every credit once in scope ALL, and once more in ACTIVE or CLOSED by its status
scoped_credits as (
    select 'ALL' as SCOPE, * from credits
    union all
    select upper(CREDIT_ACTIVE) as SCOPE, * from credits where CREDIT_ACTIVE in ('Active', 'Closed')
),

numeric_by_scope as (
    select
        SK_ID_CURR,
        SCOPE,
        min(columns('^(DAYS_CREDIT|DAYS_CREDIT_ENDDATE|BB_MONTHS_BALANCE_MIN)$')) as '\1_MIN',
        max(columns(
            '^(DAYS_CREDIT|DAYS_CREDIT_ENDDATE|CREDIT_DAY_OVERDUE|AMT_CREDIT_SUM|AMT_CREDIT_SUM_DEBT'
            || '|AMT_ANNUITY|BB_MONTHS_BALANCE_MAX)$'
        )) as '\1_MAX',
        avg(columns(
            '^(DAYS_CREDIT|DAYS_CREDIT_ENDDATE|DAYS_CREDIT_UPDATE|CREDIT_DAY_OVERDUE|AMT_CREDIT_MAX_OVERDUE'
            || '|AMT_CREDIT_SUM|AMT_CREDIT_SUM_DEBT|AMT_CREDIT_SUM_OVERDUE|AMT_CREDIT_SUM_LIMIT|AMT_ANNUITY'
            || '|BB_MONTHS_BALANCE_COUNT)$'
        )) as '\1_MEAN',
        sum(columns(
            '^(AMT_CREDIT_SUM|AMT_CREDIT_SUM_DEBT|AMT_CREDIT_SUM_LIMIT|CNT_CREDIT_PROLONG'
            || '|BB_MONTHS_BALANCE_COUNT)$'
        )) as '\1_SUM',
        var_samp(columns('^(DAYS_CREDIT)$')) as '\1_VAR',
    from scoped_credits
    group by SK_ID_CURR, SCOPE
),

all_credits as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'BUREAU_\1'
    from numeric_by_scope
    where SCOPE = 'ALL'
),

active_credits as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'BUREAU_ACTIVE_\1'
    from numeric_by_scope
    where SCOPE = 'ACTIVE'
),

closed_credits as (
    select SK_ID_CURR, columns('^(.+_(MIN|MAX|MEAN|SUM|VAR))$') as 'BUREAU_CLOSED_\1'
    from numeric_by_scope
    where SCOPE = 'CLOSED'
),

category_shares as (
    select
        SK_ID_CURR,
        avg(if(CREDIT_ACTIVE = 'Active', 1, 0)) as BUREAU_CREDIT_ACTIVE_ACTIVE_SHARE,
        avg(if(CREDIT_ACTIVE = 'Closed', 1, 0)) as BUREAU_CREDIT_ACTIVE_CLOSED_SHARE,
        avg(if(CREDIT_ACTIVE = 'Sold', 1, 0)) as BUREAU_CREDIT_ACTIVE_SOLD_SHARE,
        avg(if(CREDIT_ACTIVE = 'Bad debt', 1, 0)) as BUREAU_CREDIT_ACTIVE_BAD_DEBT_SHARE,
        avg(if(CREDIT_CURRENCY = 'currency 1', 1, 0)) as BUREAU_CREDIT_CURRENCY_1_SHARE,
        avg(if(CREDIT_TYPE = 'Consumer credit', 1, 0)) as BUREAU_CREDIT_TYPE_CONSUMER_CREDIT_SHARE,
        avg(if(CREDIT_TYPE = 'Credit card', 1, 0)) as BUREAU_CREDIT_TYPE_CREDIT_CARD_SHARE,
        avg(if(CREDIT_TYPE = 'Car loan', 1, 0)) as BUREAU_CREDIT_TYPE_CAR_LOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Mortgage', 1, 0)) as BUREAU_CREDIT_TYPE_MORTGAGE_SHARE,
        avg(if(CREDIT_TYPE = 'Microloan', 1, 0)) as BUREAU_CREDIT_TYPE_MICROLOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Loan for business development', 1, 0)) as BUREAU_CREDIT_TYPE_BUSINESS_LOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Loan for working capital replenishment', 1, 0)) as BUREAU_CREDIT_TYPE_WORKING_CAPITAL_LOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Cash loan (non-earmarked)', 1, 0)) as BUREAU_CREDIT_TYPE_CASH_LOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Another type of loan', 1, 0)) as BUREAU_CREDIT_TYPE_OTHER_LOAN_SHARE,
        avg(if(CREDIT_TYPE = 'Unknown type of loan', 1, 0)) as BUREAU_CREDIT_TYPE_UNKNOWN_LOAN_SHARE,
        avg(columns('^(BB_STATUS_.*_SHARE)$')) as 'BUREAU_\1_MEAN',
        count(*)::double as BUREAU_COUNT,
    from credits
    group by SK_ID_CURR
)

select *
from category_shares
left join all_credits using (SK_ID_CURR)
left join active_credits using (SK_ID_CURR)
left join closed_credits using (SK_ID_CURR)
