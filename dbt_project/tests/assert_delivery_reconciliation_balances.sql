-- Every routed event is accounted for at every destination, and no outcome is for an event never routed.
select *
from {{ ref('delivery_reconciliation') }}
where routed <> delivered + retrying + dead_lettered + withheld + in_flight
   or unaccounted <> 0
