-- stg_previous_application: one row per earlier Home Credit application (SK_ID_PREV) of an applicant.
-- Sentinels: 365243 in the DAYS_FIRST_*/DAYS_LAST_*/DAYS_TERMINATION dates becomes NULL; 'XNA' (not
-- available) and 'XAP' (not applicable: no cash purpose, not rejected) become NULL.
-- Row-level derived: APP_CREDIT_RATIO = amount asked for / amount granted.
with cleaned as (
    select
        SK_ID_PREV,
        SK_ID_CURR,

        -- categoricals
        nullif(NAME_CONTRACT_TYPE, 'XNA') as NAME_CONTRACT_TYPE,
        NAME_CONTRACT_STATUS,
        WEEKDAY_APPR_PROCESS_START,
        FLAG_LAST_APPL_PER_CONTRACT,
        nullif(nullif(NAME_CASH_LOAN_PURPOSE, 'XNA'), 'XAP') as NAME_CASH_LOAN_PURPOSE,
        nullif(NAME_PAYMENT_TYPE, 'XNA') as NAME_PAYMENT_TYPE,
        nullif(nullif(CODE_REJECT_REASON, 'XNA'), 'XAP') as CODE_REJECT_REASON,
        NAME_TYPE_SUITE,
        nullif(NAME_CLIENT_TYPE, 'XNA') as NAME_CLIENT_TYPE,
        nullif(NAME_GOODS_CATEGORY, 'XNA') as NAME_GOODS_CATEGORY,
        nullif(NAME_PORTFOLIO, 'XNA') as NAME_PORTFOLIO,
        nullif(NAME_PRODUCT_TYPE, 'XNA') as NAME_PRODUCT_TYPE,
        CHANNEL_TYPE,
        nullif(NAME_SELLER_INDUSTRY, 'XNA') as NAME_SELLER_INDUSTRY,
        nullif(NAME_YIELD_GROUP, 'XNA') as NAME_YIELD_GROUP,
        PRODUCT_COMBINATION,

        -- numbers
        columns('^(AMT|RATE|NFLAG)_.*$')::double,
        columns('^(HOUR_APPR_PROCESS_START|DAYS_DECISION|SELLERPLACE_AREA|CNT_PAYMENT)$')::double,
        nullif(
            columns('^DAYS_(FIRST_DRAWING|FIRST_DUE|LAST_DUE_1ST_VERSION|LAST_DUE|TERMINATION)$'),
            365243
        )::double,
    from previous_application
)

select
    *,
    AMT_APPLICATION / nullif(AMT_CREDIT, 0) as APP_CREDIT_RATIO,
from cleaned
