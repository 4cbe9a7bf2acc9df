-- Ledger-only records of events no destination could receive (consent), one row per event_id.
with

decided as (
    select * from {{ ref('stg_decided') }}
),

final as (
    select * from decided
    where stream = 'suppressed'
)

select * from final
