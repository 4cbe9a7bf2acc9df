-- Identifiers of erased profiles (right to be forgotten) for the hot path's suppression list: events carrying
-- any of them are dropped at the edge. The only place those identifiers remain after an erasure.
with

erased as (
    select * from {{ ref('stg_erased_identifiers') }}
),

final as (
    select
        identifier_id,
        identifier_type,
        identifier_value,
        erased_profile_id,
        requested_at
    from erased
)

select * from final
