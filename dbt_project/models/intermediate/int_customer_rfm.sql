-- Recency / frequency / monetary / T per customer, with the definitions of customer-lifetime-value work
-- (lifetimes.utils.summary_data_from_transaction_data, daily periods):
--   frequency     = number of repeat purchase days (purchase days - 1)
--   recency_days  = days between the first and the last purchase day
--   t_days        = days between the first purchase day and the as-of date (the customer's age)
--   monetary_value = mean revenue of the repeat purchase days (0 without repeat purchases)
-- as_of_date: var, else the latest event date in the warehouse (so a rebuild gives the same answer).
with

purchases as (
    select * from {{ ref('int_profile_purchases') }}
),

as_of as (
    {%- if var('as_of_date', none) %}
    select cast('{{ var("as_of_date") }}' as date) as as_of_date
    {%- else %}
    select coalesce(max(event_date), current_date) as as_of_date from {{ ref('stg_decided') }}
    {%- endif %}
),

ranked as (
    select
        *,
        row_number() over (partition by profile_id order by purchase_date) as purchase_day_number
    from purchases
),

final as (
    select
        ranked.profile_id,
        min(ranked.purchase_date) as first_purchase_date,
        max(ranked.purchase_date) as last_purchase_date,
        cast(sum(ranked.orders) as bigint) as orders,
        sum(ranked.revenue) as total_revenue,
        count(*) - 1 as frequency,
        date_diff('day', min(ranked.purchase_date), max(ranked.purchase_date)) as recency_days,
        date_diff('day', min(ranked.purchase_date), any_value(as_of.as_of_date)) as t_days,
        coalesce(avg(ranked.revenue) filter (where ranked.purchase_day_number > 1), 0.0) as monetary_value,
        any_value(as_of.as_of_date) as as_of_date
    from ranked
    cross join as_of
    group by ranked.profile_id
)

select * from final
