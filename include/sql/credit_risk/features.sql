-- features: the credit_risk feature table, one row per application (SK_ID_CURR): the
-- application-level part (stg_application: the staged application columns, real names,
-- categoricals as VARCHAR, plus row-level ratios) joined to the history-level part
-- (history_features: every per-applicant aggregate of the history tables).
-- Applicants without a history get NULLs for those columns. The config names both parts
-- (features.application_view, features.history_view): serving computes the first from the
-- request and takes the second from the online store.
select *
from stg_application as application
left join history_features as history using (SK_ID_CURR)
