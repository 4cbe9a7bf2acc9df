{{ config(severity='warn') }}
-- One definition, two engines: events whose hot-path features differ from the warehouse's recomputation.
-- A warning, not an error: a hot path that folded a duplicate into its session state legitimately differs.
select * from {{ ref('feature_parity') }} where not is_match
