-- First-mile decisions vs warehouse hindsight, per policy version (-1 = no version stamped):
--   bots:     hot path is_bot vs the behavioural hindsight label of the event's session (confusion counts)
--   identity: events whose hot-path profile differs from the warehouse's (merges the edge did not know)
--   value:    the hot path's score vs label_converted (mean per class, Brier score over scores in [0, 1])
with

training as (
    select * from {{ ref('training_events') }}
),

final as (
    select
        coalesce(policy_version, -1) as policy_version,
        count(*) as events,
        count(distinct session_id) as sessions,
        count(*) filter (where is_bot) as hot_bot_events,
        count(*) filter (where label_bot_behaviour) as hindsight_bot_events,
        count(*) filter (where is_bot and label_bot_behaviour) as bot_true_positives,
        count(*) filter (where is_bot and not label_bot_behaviour) as bot_false_positives,
        count(*) filter (where not is_bot and label_bot_behaviour) as bot_false_negatives,
        count(*) filter (where not is_bot and not label_bot_behaviour) as bot_true_negatives,
        cast(count(*) filter (where is_bot and label_bot_behaviour) as double)
            / nullif(count(*) filter (where is_bot), 0) as bot_precision,
        cast(count(*) filter (where is_bot and label_bot_behaviour) as double)
            / nullif(count(*) filter (where label_bot_behaviour), 0) as bot_recall,
        count(*) filter (where profile_id is distinct from warehouse_profile_id) as identity_reattributed_events,
        cast(count(*) filter (where profile_id is distinct from warehouse_profile_id) as double)
            / count(*) as identity_miss_rate,
        count(*) filter (where label_converted) as converting_events,
        avg(score) filter (where label_converted) as mean_score_converting,
        avg(score) filter (where not label_converted) as mean_score_not_converting,
        avg(power(score - case when label_converted then 1.0 else 0.0 end, 2))
            filter (where score between 0 and 1) as score_brier
    from training
    group by coalesce(policy_version, -1)
)

select * from final
