-- Connected components over the identity links (full history): every identifier gets the smallest identifier of
-- its component as component_id. Min-label propagation with a keyed recursive CTE (DuckDB USING KEY): each round
-- only identifiers whose label improved propagate further.
with recursive

edges as (
    select from_id as a, to_id as b from {{ ref('int_identity_edges') }}
    union
    select to_id, from_id from {{ ref('int_identity_edges') }}
),

labels(node, component_id) using key (node) as (
    select a, min(least(a, b)) from edges group by a
    union
    select edges.b, min(labels.component_id)
    from labels
    inner join edges on edges.a = labels.node
    inner join recurring.labels as current_label on current_label.node = edges.b
    group by edges.b, current_label.component_id
    having min(labels.component_id) < current_label.component_id
),

final as (
    select
        node as identifier_id,
        split_part(node, ':', 1) as identifier_type,
        substr(node, length(split_part(node, ':', 1)) + 2) as identifier_value,
        component_id
    from labels
)

select * from final
