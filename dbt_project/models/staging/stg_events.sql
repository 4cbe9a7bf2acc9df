-- Events the first mile decided and kept: delivered to the warehouse (stream events) or quarantined as bots
-- (stream quarantine). Typed, one row per event_id.
with

decided as (
    select * from {{ ref('stg_decided') }}
),

final as (
    select * from decided
    where stream in ('events', 'quarantine')
)

select * from final
