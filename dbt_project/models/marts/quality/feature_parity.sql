-- Per event the hot path stamped features on: does the warehouse's recomputation agree? (one definition, two
-- engines). A value matches within parity_abs_tolerance or parity_rel_tolerance (sums in another order).
{%- set features = var('session_features') %}
{%- set abs_tol = var('parity_abs_tolerance') %}
{%- set rel_tol = var('parity_rel_tolerance') %}
with

features as (
    select * from {{ ref('int_session_features') }}
    where hot_f_session_event_count is not null
),

compared as (
    select
        event_id,
        stream,
        session_id,
        hot_session_id,
        hot_session_id is not distinct from session_id as session_matches,
        {%- for f in features %}
        abs(f_{{ f }} - hot_f_{{ f }}) <= greatest({{ abs_tol }}, {{ rel_tol }} * abs(f_{{ f }}))
            as {{ f }}_matches,
        {%- endfor %}
        greatest(
            {%- for f in features %}
            coalesce(abs(f_{{ f }} - hot_f_{{ f }}), 'inf'::double){{ ',' if not loop.last }}
            {%- endfor %}
        ) as max_abs_diff
    from features
),

final as (
    select
        event_id,
        stream,
        session_id,
        hot_session_id,
        session_matches,
        concat_ws(',',
            {%- for f in features %}
            case when not coalesce({{ f }}_matches, false) then '{{ f }}' end{{ ',' if not loop.last }}
            {%- endfor %}
        ) as mismatched_features,
        max_abs_diff,
        session_matches
        {%- for f in features %} and coalesce({{ f }}_matches, false){% endfor %} as is_match
    from compared
)

select * from final
