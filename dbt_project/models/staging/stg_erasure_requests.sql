-- Right-to-be-forgotten requests: the seed plus the erase_profile_ids var, one row per profile id.
with

seeded as (
    select
        cast(profile_id as varchar) as profile_id,
        cast(requested_at as timestamptz) as requested_at
    from {{ ref('erasure_requests') }}
),

from_var as (
    {%- set ids = var('erase_profile_ids', []) %}
    {%- if ids | length > 0 %}
    select
        cast(profile_id as varchar) as profile_id,
        cast(null as timestamptz) as requested_at
    from (values {% for pid in ids %}('{{ pid | replace("'", "''") }}'){{ ',' if not loop.last }}{% endfor %}) as v(profile_id)
    {%- else %}
    select cast(null as varchar) as profile_id, cast(null as timestamptz) as requested_at where false
    {%- endif %}
),

unioned as (
    select * from seeded
    union all
    select * from from_var
),

final as (
    select
        profile_id,
        min(requested_at) as requested_at
    from unioned
    where profile_id is not null
    group by profile_id
)

select * from final
