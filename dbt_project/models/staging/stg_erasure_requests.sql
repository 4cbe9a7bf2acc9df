-- Right-to-be-forgotten requests, one row per subject id: the seed (hand-entered), the erase_profile_ids var, and
-- the regulations API's SUPPRESS_WITH_DELETE requests that the erasure job recorded in the erasure trail
-- (<regulations dir>/erasure_requests.jsonl, warehouse/erasure_trail.py). A subject id is matched against the
-- lake's profile, user and anonymous ids (stg_erased_identifiers).
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

from_api as (
    select
        subject_id as profile_id,
        requested_at
    from ({{ regulations_relation('erasure_requests', {'request_id': 'VARCHAR', 'regulation_type': 'VARCHAR',
                                                       'subject_type': 'VARCHAR', 'subject_id': 'VARCHAR',
                                                       'requested_at': 'TIMESTAMPTZ'}) }})
),

unioned as (
    select * from seeded
    union all
    select * from from_var
    union all
    select * from from_api
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
