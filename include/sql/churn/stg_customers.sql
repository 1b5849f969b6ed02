-- Staging of the Telco customer file: trims codes, turns the blank TotalCharges of brand-new
-- customers (tenure 0, nothing billed yet) into 0, and derives row-level columns.
with customers_clean as (
    select
        customerID,
        trim(gender) as gender,
        SeniorCitizen::integer as SeniorCitizen,
        trim(Partner) as Partner,
        trim(Dependents) as Dependents,
        tenure::integer as tenure,
        trim(PhoneService) as PhoneService,
        trim(MultipleLines) as MultipleLines,
        trim(InternetService) as InternetService,
        trim(OnlineSecurity) as OnlineSecurity,
        trim(OnlineBackup) as OnlineBackup,
        trim(DeviceProtection) as DeviceProtection,
        trim(TechSupport) as TechSupport,
        trim(StreamingTV) as StreamingTV,
        trim(StreamingMovies) as StreamingMovies,
        trim(Contract) as Contract,
        trim(PaperlessBilling) as PaperlessBilling,
        trim(PaymentMethod) as PaymentMethod,
        MonthlyCharges::double as MonthlyCharges,
        case when TotalCharges is null and tenure = 0 then 0.0 else TotalCharges::double end as TotalCharges,
    from customers
)

select
    *,
    case
        when tenure < 12 then '0-11'
        when tenure < 24 then '12-23'
        when tenure < 48 then '24-47'
        else '48-72'
    end as tenure_bucket,
    (PhoneService = 'Yes')::integer
    + (MultipleLines = 'Yes')::integer
    + (InternetService <> 'No')::integer
    + (OnlineSecurity = 'Yes')::integer
    + (OnlineBackup = 'Yes')::integer
    + (DeviceProtection = 'Yes')::integer
    + (TechSupport = 'Yes')::integer
    + (StreamingTV = 'Yes')::integer
    + (StreamingMovies = 'Yes')::integer as services_count,
    TotalCharges / nullif(tenure, 0) as avg_monthly_charges,
    MonthlyCharges / nullif(TotalCharges / nullif(tenure, 0), 0) as monthly_to_avg_ratio,
    TotalCharges / nullif(tenure * MonthlyCharges, 0) as total_to_expected_ratio,
from customers_clean
