-- stg_application: one row per loan application, keyed by SK_ID_CURR.
-- Typed and cleaned application columns plus row-level ratios. The label column is never
-- selected (columns are picked by name family), so the same query scores unlabeled applications.
-- Sentinels: DAYS_EMPLOYED = 365243 (no employment) and 'XNA' categories become NULL.
with cleaned as (
    select
        SK_ID_CURR,

        -- categoricals, kept as VARCHAR
        NAME_CONTRACT_TYPE,
        nullif(CODE_GENDER, 'XNA') as CODE_GENDER,
        FLAG_OWN_CAR,
        FLAG_OWN_REALTY,
        NAME_TYPE_SUITE,
        NAME_INCOME_TYPE,
        NAME_EDUCATION_TYPE,
        NAME_FAMILY_STATUS,
        NAME_HOUSING_TYPE,
        OCCUPATION_TYPE,
        WEEKDAY_APPR_PROCESS_START,
        nullif(ORGANIZATION_TYPE, 'XNA') as ORGANIZATION_TYPE,
        FONDKAPREMONT_MODE,
        HOUSETYPE_MODE,
        WALLSMATERIAL_MODE,
        EMERGENCYSTATE_MODE,

        -- applicant, loan and region numbers
        columns('^(CNT|AMT|REGION|EXT_SOURCE|HOUR_APPR)_.*$')::double,
        columns('^DAYS_(BIRTH|REGISTRATION|ID_PUBLISH|LAST_PHONE_CHANGE)$')::double,
        nullif(DAYS_EMPLOYED, 365243)::double as DAYS_EMPLOYED,
        OWN_CAR_AGE::double as OWN_CAR_AGE,

        -- 0/1 flags: contact details, address mismatches, documents provided
        columns('^FLAG_(MOBIL|EMP_PHONE|WORK_PHONE|CONT_MOBILE|PHONE|EMAIL|DOCUMENT_[0-9]+)$')::double,
        columns('^(REG|LIVE)_(REGION|CITY)_NOT_.*$')::double,

        -- social circle: observed / defaulted acquaintances
        columns('^(OBS|DEF)_[0-9]+_CNT_SOCIAL_CIRCLE$')::double,

        -- normalised building information (average, mode, median)
        columns('^.*_(AVG|MEDI)$')::double,
        columns(
            '^(APARTMENTS|BASEMENTAREA|YEARS_BEGINEXPLUATATION|YEARS_BUILD|COMMONAREA|ELEVATORS'
            || '|ENTRANCES|FLOORSMAX|FLOORSMIN|LANDAREA|LIVINGAPARTMENTS|LIVINGAREA'
            || '|NONLIVINGAPARTMENTS|NONLIVINGAREA|TOTALAREA)_MODE$'
        )::double,
    from application_train
)

select
    *,
    AMT_CREDIT / nullif(AMT_INCOME_TOTAL, 0) as CREDIT_INCOME_RATIO,
    AMT_ANNUITY / nullif(AMT_INCOME_TOTAL, 0) as ANNUITY_INCOME_RATIO,
    AMT_ANNUITY / nullif(AMT_CREDIT, 0) as ANNUITY_CREDIT_RATIO,
    DAYS_EMPLOYED / nullif(DAYS_BIRTH, 0) as DAYS_EMPLOYED_RATIO,
    AMT_INCOME_TOTAL / nullif(CNT_FAM_MEMBERS, 0) as INCOME_PER_PERSON,
    AMT_INCOME_TOTAL / nullif(AMT_CREDIT, 0) as INCOME_CREDIT_RATIO,
    AMT_GOODS_PRICE / nullif(AMT_CREDIT, 0) as GOODS_CREDIT_RATIO,
from cleaned
